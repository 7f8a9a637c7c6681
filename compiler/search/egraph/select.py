"""Which generated rule directions can ever match a graph, decided from the rule files' text
(parsing a rule costs ~13 ms, so only the survivors are parsed and translated).

A node's key is ``op/arity{plain attrs}`` in the text IR's spelling of attributes, without
dim-valued attrs (a rule states those in dim variables). A direction is kept when every key of
its left side is a key of the graph or of the right side of another kept direction (a
fixpoint), or of an op a hand-written rule makes (``wild``).
"""
from __future__ import annotations

import re
from typing import Iterable

from ...ir.node import Node
from ...ir.text import format_attr
from ...ops.registry import get_op
from ..ruleset import Entry, _sides

_LINE = re.compile(r"= (\w+)\(([^)]*)\)(?: \{(.*)\})?\s*$")
_KEYS: dict[tuple[str, bool], tuple[frozenset[str], frozenset[str], int]] = {}


def _key(op: str, arity: int, attrs: Iterable[str]) -> str:
    return f"{op}/{arity}{{{', '.join(attrs)}}}"


def node_key(n: Node) -> str:
    """The key of a graph node."""
    dims = get_op(n.op).dim_attrs
    return _key(n.op, len(n.inputs), (f"{k}={format_attr(v, None, 16)}"
                                      for k, v in n.attrs.items() if k not in dims))


def _top_level(text: str) -> list[str]:
    """``a=1, b=(1, 2)`` -> ["a=1", "b=(1, 2)"] (commas inside brackets kept)."""
    out, cur, depth = [], [], 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def text_keys(graph_text: str) -> tuple[frozenset[str], int]:
    """Keys of the nodes of a rule side in the text IR, and its node count."""
    keys = set()
    n = 0
    for line in graph_text.splitlines():
        m = _LINE.search(line)
        if m is None or "= " not in line or line.lstrip().startswith("graph"):
            continue
        op, args, attrs = m.group(1), m.group(2), m.group(3) or ""
        dims = get_op(op).dim_attrs
        arity = len([a for a in args.split(",") if a.strip()])
        items = [a for a in _top_level(attrs) if a.split("=", 1)[0] not in dims]
        keys.add(_key(op, arity, items))
        n += 1
    return frozenset(keys), n


def entry_keys(e: Entry, reverse: bool) -> tuple[frozenset[str], frozenset[str], int]:
    """(left-side keys, right-side keys, right-side node count) of a direction."""
    k = (e.text, reverse)
    if k not in _KEYS:
        (lk, ln), (rk, rn) = (text_keys(side) for side in _sides(e))
        _KEYS[k] = (rk, lk, ln) if reverse else (lk, rk, rn)
    return _KEYS[k]


def live(cands: list[tuple[str, Entry, bool]], graph_keys: set[str], wild: set[str]
         ) -> tuple[list[tuple[str, Entry, bool]], list[str]]:
    """The candidates (name, entry, reversed) that can ever match, and the names of the rest."""
    keys = set(graph_keys)

    def known(k: str) -> bool:
        return k in keys or k.split("/", 1)[0] in wild

    kept: list[tuple[str, Entry, bool]] = []
    pending = cands
    while True:
        nxt = []
        for c in pending:
            lk, rk, _ = entry_keys(c[1], c[2])
            if all(known(k) for k in lk):
                kept.append(c)
                keys.update(rk)
            else:
                nxt.append(c)
        if len(nxt) == len(pending):
            break
        pending = nxt
    return kept, [c[0] for c in pending]
