"""The generated (verified) rule files as search rules, in both directions. (The search's full
rule set adds hand-written rules of pass modules; ``graphopt.pipeline.search_rules`` assembles
it, since the core does not import ``passes/``.)

The generated library is large (thousands of rules), and parsing a rule costs far more than
reading it, so the files are first scanned as text (rule name, ops of each side); only the rule
directions whose left side uses ops the graph has are parsed (``ops=``), once per process.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..rewrite.rule import PatternRule, Rule

_OP = re.compile(r"= (\w+)\(")


@dataclass(frozen=True)
class Entry:
    """One generated rule as scanned from its file."""

    name: str
    source: str  # file stem
    text: str
    lhs_ops: frozenset[str]
    rhs_ops: frozenset[str]


_SCANNED: dict[str, list[Entry]] = {}
_RULES: dict[tuple[str, str, bool], Rule | None] = {}


def scan(directory: "str | Path | None" = None) -> list[Entry]:
    """Every rule of the rule files, unparsed (name, text, ops of each side)."""
    from ..subst.rulefile import RULES_DIR

    d = Path(directory) if directory is not None else RULES_DIR
    key = str(d.resolve())
    if key in _SCANNED:
        return _SCANNED[key]
    out: list[Entry] = []
    files = [d] if d.is_file() else sorted(d.glob("*.rules")) if d.exists() else []
    for f in files:
        text = f.read_text()
        for blk in text.split("\nrule ")[1:]:
            i, j = blk.find("\nlhs:\n"), blk.find("\nrhs:\n")
            k = blk.find("\nend", j)
            if min(i, j, k) < 0:
                # let the parser report the malformed rule with its position
                from ..subst.rulefile import loads

                loads("rule " + blk, str(f))
                continue
            name = blk.split("\n", 1)[0].strip()
            out.append(Entry(name, f.stem, "rule " + blk[:k + 4] + "\n",
                             frozenset(_OP.findall(blk[i:j])), frozenset(_OP.findall(blk[j:k]))))
    _SCANNED[key] = out
    return out


_INPUTS = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]*):")


def _sides(e: Entry) -> tuple[str, str]:
    """The lhs and rhs graph texts of a scanned rule."""
    t = e.text
    i, j = t.index("\nlhs:\n"), t.index("\nrhs:\n")
    k = t.index("\nend", j)
    return t[i + 6:j + 1], t[j + 6:k + 1]


def _inputs(graph_text: str) -> set[str]:
    return set(_INPUTS.findall(graph_text.split("\n", 1)[0]))


def _rule(d: str, e: Entry, reverse: bool) -> Rule | None:
    """The rewrite rule of one direction of a generated rule. Only the left side is parsed
    now; the right side is parsed the first time the rule is applied."""
    from ..ir.text import parse
    from ..rewrite.pattern import root_node
    from ..rewrite.rule import pattern_of

    key = (d, e.name, reverse)
    if key in _RULES:
        return _RULES[key]
    lhs_text, rhs_text = _sides(e)
    src, dst = (rhs_text, lhs_text) if reverse else (lhs_text, rhs_text)
    r: Rule | None = None
    if not reverse or _inputs(rhs_text) == _inputs(lhs_text):
        where = f"{d}/{e.source}.rules: rule {e.name}"
        try:
            roots, _ = pattern_of(parse(src))
        except Exception as ex:
            raise type(ex)(f"{where}: {ex}") from ex
        if all(root_node(t)[0] is not None for t in roots):  # a bare variable matches anything
            r = PatternRule(e.name + ("~" if reverse else ""), roots, _LazyBuilder(dst, where),
                            None, e.source, len(_OP.findall(dst)), "generated")
    _RULES[key] = r
    return r


class _LazyBuilder:
    """Builds a rule's right side, parsing its text on first use."""

    def __init__(self, text: str, where: str) -> None:
        self.text, self.where = text, where
        self.fn: object = None

    def __call__(self, m: object) -> object:
        if self.fn is None:
            from ..ir.text import parse
            from ..rewrite.rule import builder_of

            self.fn = builder_of(parse(self.text))
        return self.fn(m)  # type: ignore[operator]


def generated_rules(directory: "str | Path | None" = None, ops: Iterable[str] | None = None,
                    both_ways: bool = True) -> list[Rule]:
    """Rules from the generated rule files (``compiler/subst/rules`` by default). A generated
    rule is an equality, so it is also used right-to-left where its rhs reads every lhs input.
    ``ops``: only directions whose left side uses just these ops (None: all)."""
    from ..subst.rulefile import RULES_DIR

    d = str((Path(directory) if directory is not None else RULES_DIR).resolve())
    allowed = None if ops is None else frozenset(ops)
    out: list[Rule] = []
    for e in scan(d):
        for rev in ((False, True) if both_ways else (False,)):
            left = e.rhs_ops if rev else e.lhs_ops
            if allowed is not None and not left <= allowed:
                continue
            r = _rule(d, e, rev)
            if r is not None:
                out.append(r)
    return out


def default_rules(directory: "str | Path | None" = None, ops: Iterable[str] | None = None
                  ) -> list[Rule]:
    """The search's default rules: the generated rules both ways (for a graph with ``ops``, the
    directions whose left side uses only those ops)."""
    return generated_rules(directory, ops)


def graph_ops(g: object) -> frozenset[str]:
    """Ops of a graph, as rule selection sees them."""
    return frozenset(n.op for n in g.nodes  # type: ignore[attr-defined]
                     if n.op not in ("input", "constant", "opaque"))
