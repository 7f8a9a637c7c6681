"""The HTML report: one self-contained page that shows what an optimization changed.

``write_html(report, before, after, path)`` writes the page for one ``optimize`` run;
``diff_html(a_path, b_path, out_path)`` the page for two ONNX files. The page holds the before /
after graphs (laid out by Graphviz's ``dot``, inlined as SVG), the changed regions highlighted
in both graphs and linked to the rule that made them, the op table, the check's errors per
output and, when given, a latency bar chart (inline SVG). Nothing on it is fetched from a
network; it has no script.

Provenance. A node's ``Origin`` (the frontend's node name) survives rewrites: a rule builds its
replacement with the origin of the node it replaces (the fused ``attention`` node carries the
Softmax's origin). A node of the optimized graph is *kept* when it has a *twin* in the original:
the very same node (hash-consing), the input of the same name, the node of the same origin, op,
attributes and types (constant inputs of the same types: a merged matmul keeps its origin but
reads a wider weight), or, for nodes without origin, the node of the same structure (bottom-up
over twinned inputs, then top-down from twinned users and the outputs). Other nodes of the
optimized graph are *changed*; nodes of the original without a twin were *removed*. Changed and
removed nodes form *regions*: connected within their graph, and joined across the graphs where
they share an origin or where a kept user reads a changed value in place of a removed one.

Which rule made a region is read from the report's counters (``report["rewrites"]``,
``pass.counter``, grouped by the place kind of the pass's rules; the search's
``rules_applied``) and the rules of the passes behind them: a fusion or lowering rule explains
the regions whose new nodes are of the op its place names (``attention`` for the place
``attention``; a region with no new node, by the ops it lost), a cleanup / canonical / search
rule those that lost or made a node of the op it is about (``cast_noop``: cast; a search rule:
its pattern's root op), constant folding the regions that lost only nodes computed from
constants. A region holding several nodes that fusions made (two attention blocks joined by the
mask computation they share) is split around them. Each highlighted node links to the first
rule that explains the node itself, else its region's. Rules are found in the passes
``optimize`` runs and in every rule class loaded in the process that names its pass
(quantization places name no op: they make the ops of ``ops/quant.py``). This is attribution
by op kind, not a per-node record (the passes keep none): a region may list a rule that acted
nearby. Regions no fired rule explains are shown as "not attributed".

Big graphs: over ``MAX_NODES`` drawn nodes, a graph shows only its changed regions with their
direct neighbours, fusions first, as many regions as fit (a single region larger than that: its
first nodes), its pieces stacked in graph order; the page says so above the graph.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .errors import GraphOptError
from .ir.graph import Graph
from .ir.node import Node
from .ir.types import TensorType
from .report import graph_summary, human_bytes

MAX_NODES = 400  # drawn nodes per graph before the graph is cut to its changed regions
PALETTE = ("#ffb3ba", "#bae1ff", "#baffc9", "#ffdfba", "#e0bbff", "#fff5ba", "#c9f2ff",
           "#ffc9f0", "#d5f5b0", "#f5d0b0")
KIND_ORDER = ("fusion", "quantization", "lowering", "tensor_parallel", "search", "generated",
              "canonical", "cleanup")


# ---- what changed --------------------------------------------------------------------------


@dataclass
class Region:
    """Changed nodes of the optimized graph and removed nodes of the original that belong
    together, and the fired rules that explain them (keys of ``Changes.rules``)."""

    rid: int
    before: list[Node]
    after: list[Node]
    rules: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"region-{self.rid}"

    @property
    def color(self) -> str:
        return PALETTE[(self.rid - 1) % len(PALETTE)]


@dataclass
class FiredRule:
    """The counters a run reported for one place kind of a pass (``attention_flash``:
    ``attention_fused``, ``attention_causal``, ...) or for one unplaced rule, and the rules of
    that pass behind them."""

    key: str  # "pass.place", "pass.counter" (an unplaced rule), or "search.<rule>"
    pass_name: str
    counters: dict[str, int]
    kind: str
    places: tuple[str, ...]  # the rules' place kinds ("attention"); empty for unplaced rules
    makes: frozenset[str]  # ops a placed rule makes (the ops its place names)
    ops: frozenset[str]  # ops an unplaced rule is about (the counter's first word, anchors)
    folds: bool  # constant folding: explains removed nodes computed from constants only
    rules: tuple[tuple[str, str], ...]  # (rule name, what it does)
    pass_doc: str
    rules_file: str  # passes/rules/<pass>.rules when the pass states its spellings there

    @property
    def anchor(self) -> str:
        return "rule-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.key)

    @property
    def label(self) -> str:
        names = ", ".join(n for n, _ in self.rules) or ", ".join(self.counters)
        return f"{names} ({self.pass_name})"


@dataclass
class Changes:
    """The comparison of two graphs: each drawn node's status, the regions, the fired rules."""

    before_status: dict[Node, str]  # "kept" | "removed"
    after_status: dict[Node, str]  # "kept" | "changed"
    regions: list[Region]
    region_of: dict[Node, Region]
    rules: dict[str, FiredRule]
    rule_of: dict[Node, str] = field(default_factory=dict)  # changed / removed node -> rule
    from_constants: set[Node] = field(default_factory=set)  # original nodes over constants only
    link: Any = None  # networkx.Graph over ("b" | "a", node): what joins a region


def drawn(g: Graph) -> list[Node]:
    """The nodes a picture shows: every node but constants (weights and folded values)."""
    return [n for n in g.nodes if n.op != "constant"]


def _same_node(a: Node, b: Node) -> bool:
    """Same op, attributes and output types, and constant inputs of the same types (a merged
    matmul keeps its origin and op but reads a concatenated weight)."""
    if a.op != b.op or a.attrs != b.attrs or a.out_types != b.out_types or \
            len(a.inputs) != len(b.inputs):
        return False
    return all(v.node.op != "constant" or (w.node.op == "constant" and v.type == w.type)
               for v, w in zip(a.inputs, b.inputs))


def _matching(n: Node, m: Node) -> bool:
    return (n.origin is None or m.origin is None or n.origin == m.origin) and _same_node(n, m)


def twins(before: Graph, after: Graph) -> dict[Node, Node]:
    """Each node of ``after`` that stands for a node of ``before`` -> that node: the same node
    (hash-consing), the graph input of the same name, the node of the same origin (op,
    attributes and types equal), and, for nodes without origin, the node of the same structure:
    bottom-up over twinned inputs, then top-down from twinned users and the outputs."""
    b_nodes, a_nodes = drawn(before), drawn(after)
    b_set = set(b_nodes)
    by_origin: dict[Any, list[Node]] = {}
    by_shape: dict[tuple[Any, ...], list[Node]] = {}
    for m in b_nodes:
        if m.origin is not None:
            by_origin.setdefault(m.origin, []).append(m)
        by_shape.setdefault(_shape_key(m, {v.node: v.node for v in m.inputs}), []).append(m)
    inputs = {m.attrs["name"]: m for m in before.inputs}
    twin: dict[Node, Node] = {}
    taken: set[Node] = set()

    def pair(n: Node, m: Node | None) -> None:
        if m is not None and m not in taken:
            twin[n] = m
            taken.add(m)

    for n in a_nodes:
        if n in b_set:
            pair(n, n)
        elif n.op == "input":
            pair(n, inputs.get(n.attrs["name"]))
        elif n.origin is not None:
            pair(n, next((m for m in by_origin.get(n.origin, ()) if m not in taken
                          and _same_node(n, m)), None))
        else:
            pair(n, next((m for m in by_shape.get(_shape_key(n, twin), ()) if m not in taken
                          and _matching(n, m)), None))
    pending = list(zip(after.outputs, before.outputs))
    for n in reversed(a_nodes):
        if n in twin:
            pending += zip(n.inputs, twin[n].inputs)
    # top-down: users first (reverse topological order), so a twinned user twins its inputs
    for v, w in pending:
        a, b = v.node, w.node
        if a not in twin and b not in taken and a.op != "constant" and v.index == w.index \
                and _matching(a, b):
            pair(a, b)
            pending += zip(a.inputs, b.inputs)
    return twin


def _shape_key(n: Node, twin: Mapping[Node, Node]) -> tuple[Any, ...]:
    """A node's structure over its inputs' twins (constants by type): None when an input has
    no twin."""
    ins = tuple(("c", v.type) if v.node.op == "constant" else (id(twin.get(v.node)), v.index)
                for v in n.inputs)
    return (n.op, n.out_types, ins) if all(x[0] != id(None) for x in ins) else (None,)


def compare(before: Graph, after: Graph) -> Changes:
    """Kept / changed / removed nodes and their regions (see the module docstring)."""
    import networkx as nx

    b_nodes, a_nodes = drawn(before), drawn(after)
    twin = twins(before, after)
    after_status = {n: "kept" if n in twin else "changed" for n in a_nodes}
    taken = set(twin.values())
    before_status = {n: "kept" if n in taken else "removed" for n in b_nodes}
    by_origin: dict[Any, list[Node]] = {}
    for m in b_nodes:
        if m.origin is not None and before_status[m] == "removed":
            by_origin.setdefault(m.origin, []).append(m)

    link = nx.Graph()
    for side, status, bad in (("b", before_status, "removed"), ("a", after_status, "changed")):
        for n, s in status.items():
            if s != bad:
                continue
            link.add_node((side, n))
            for v in n.inputs:
                if status.get(v.node) == bad:
                    link.add_edge((side, n), (side, v.node))
    for n, s in after_status.items():
        if s == "changed" and n.origin is not None:
            for m in by_origin.get(n.origin, ()):
                link.add_edge(("a", n), ("b", m))
    # a kept user reading a changed value where its twin read a removed one: one replacement
    for n, m in twin.items():
        for v, w in zip(n.inputs, m.inputs):
            if after_status.get(v.node) == "changed" and before_status.get(w.node) == "removed":
                link.add_edge(("a", v.node), ("b", w.node))
    changes = Changes(before_status, after_status, [], {}, {}, link=link)
    for n in b_nodes:
        if n.inputs and all(v.node.op == "constant" or v.node in changes.from_constants
                            for v in n.inputs):
            changes.from_constants.add(n)
    _set_regions(changes, nx.connected_components(link))
    return changes


def _set_regions(changes: Changes, groups: Iterable[Iterable[tuple[str, Node]]]) -> None:
    """Number the groups of linked nodes as regions, in the order of the graphs' nodes."""
    order = {k: i for i, k in enumerate(sorted(changes.link.nodes, key=lambda k: (
        k[0] == "a", k[1].uid)))}
    comps = sorted((sorted(c, key=order.__getitem__) for c in groups), key=lambda c: order[c[0]])
    changes.regions, changes.region_of = [], {}
    for i, comp in enumerate(comps, 1):
        r = Region(i, [n for s, n in comp if s == "b"], [n for s, n in comp if s == "a"])
        changes.regions.append(r)
        for n in r.before + r.after:
            changes.region_of[n] = r


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip()
    return " ".join(text.split("\n\n", 1)[0].split())


@dataclass(frozen=True)
class RuleFacts:
    """What the page says about one rule and how it attributes regions."""

    name: str
    kind: str
    place: str
    anchors: frozenset[str]  # ops whose nodes anchor a match (empty: any, or unknown)
    doc: str  # the first paragraph of its docstring ("" for a pattern rule)
    folds: bool  # the constant folder


def _facts(r: Any) -> RuleFacts:
    """A rule (instance, or a ``Rule`` subclass with class-level fields) as ``RuleFacts``."""
    from .rewrite.fold import FoldRule
    from .rewrite.rule import PatternRule

    cls = r if isinstance(r, type) else type(r)
    doc = "" if issubclass(cls, PatternRule) else _first_paragraph(cls.__doc__)
    return RuleFacts(str(r.name), str(r.kind), str(r.place or ""),
                     frozenset(r.anchors or ()), doc, issubclass(cls, FoldRule))


def _subclasses(c: type) -> Iterator[type]:
    for s in c.__subclasses__():
        yield s
        yield from _subclasses(s)


def _pass_index(target: str) -> dict[str, tuple[str, list[RuleFacts]]]:
    """Pass name -> (its docstring's first paragraph, its rules): the passes ``optimize`` runs
    (the simplify set, the fusions with contrib ops), then every rule class loaded in this
    process that names its pass (quantization, tensor parallelism: a pass that ran was
    loaded)."""
    from graphopt.passes.fusions import fusion_passes

    from .pipeline import default_passes
    from .rewrite.passes import Pass
    from .rewrite.rule import PatternRule, Rule

    out: dict[str, tuple[str, list[RuleFacts]]] = {}
    for p in [*default_passes(), *fusion_passes(target, allow_contrib_ops=True)]:
        if p.name not in out:
            out[p.name] = (_first_paragraph(type(p).__doc__),
                           [_facts(r) for r in getattr(p, "rules", ())])
    docs = {c.__dict__["name"]: _first_paragraph(c.__doc__) for c in _subclasses(Pass)
            if isinstance(c.__dict__.get("name"), str)}
    loaded: dict[str, list[RuleFacts]] = {}
    for c in _subclasses(Rule):
        if issubclass(c, PatternRule) or not isinstance(c.__dict__.get("name"), str) or \
                not isinstance(getattr(c, "pass_name", None), str) or not c.pass_name:
            continue
        loaded.setdefault(c.pass_name, []).append(_facts(c))
    for name, rules in loaded.items():
        if name not in out:
            out[name] = (docs.get(name, ""), rules)
    return out


def _rules_file(pass_name: str) -> str:
    """``passes/rules/<pass>.rules`` when the pass states its spellings there, else ""."""
    import graphopt.passes as passes_pkg

    base = os.path.dirname(os.path.abspath(passes_pkg.__file__))
    found = os.path.exists(os.path.join(base, "rules", f"{pass_name}.rules"))
    return f"passes/rules/{pass_name}.rules" if found else ""


def fired_rules(report: Mapping[str, Any], ops: Iterable[str] = ()) -> dict[str, FiredRule]:
    """The run's rewrite counters (``report["rewrites"]`` and the search's ``rules_applied``)
    with the rules behind each, described from the passes' own docstrings. ``ops``: the ops of
    the graphs (to find the generated search rules the report names)."""
    index = _pass_index(str(report.get("target") or "cpu"))
    out: dict[str, FiredRule] = {}
    for key, count in (report.get("rewrites") or {}).items():
        pass_name, _, counter = key.partition(".")
        pass_doc, all_rules = index.get(pass_name, ("", []))
        rules = [r for r in all_rules if r.name == counter or (
            r.place and counter.startswith(r.place + "_"))]
        if not rules and len({r.place for r in all_rules}) == 1:
            rules = list(all_rules)  # a pass of one place kind ("matmuls_merged", "folded")
        places = tuple(sorted({r.place for r in rules if r.place and counter != r.name}))
        group = f"{pass_name}.{places[0] if len(places) == 1 else counter}"
        if group in out:
            out[group].counters[counter] = int(count)
            continue
        kind = min((r.kind for r in rules), key=_kind_rank, default="cleanup")
        about = frozenset({counter.split("_")[0]} | {o for r in rules if not places
                                                     for o in r.anchors})
        out[group] = FiredRule(group, pass_name, {counter: int(count)}, kind, places,
                               _made_ops(places, kind, pass_name), about,
                               any(r.folds for r in rules),
                               tuple((r.name, r.doc) for r in rules), pass_doc,
                               _rules_file(pass_name))
    applied = (report.get("search") or {}).get("rules_applied") or {}
    if applied:
        by_name = _search_rules(set(applied), ops)
        for name, count in applied.items():
            r = by_name.get(name)
            if r is None:
                raise GraphOptError(f"the report names search rule {name!r}, which the search's "
                                    f"rule set does not hold", where="html report")
            key = f"search.{name}"
            f = _facts(r)
            out[key] = FiredRule(key, "search", {name: int(count)}, f.kind, (), frozenset(),
                                 f.anchors,
                                 False, ((name, f.doc),),
                                 "Cost-ordered backtracking search over the generated and "
                                 "hand-written search rules (TASO).", "")
    return out


def _search_rules(names: set[str], ops: Iterable[str]) -> dict[str, Any]:
    """The search rules named: the hand-written ones, else the generated ones over ``ops`` (the
    graphs' ops; building all 25k directions takes half a minute)."""
    from .pipeline import search_rules
    from .search.ruleset import default_rules

    # the search's set for a graph without ops: its hand-written rules alone (every generated
    # rule's left side has an op)
    found = {r.name: r for r in search_rules(Graph([], [])) if r.name in names}
    if names - set(found):
        found.update({r.name: r for r in default_rules(ops=frozenset(ops)) if r.name in names})
    return found


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _place_makes(place: str, op: str) -> bool:
    return op == place or op.startswith(place) or place.startswith(op)


def _made_ops(places: Sequence[str], kind: str, pass_name: str) -> frozenset[str]:
    """The ops rules of these places make: the registered ops a place names (``attention``,
    ``rotary`` -> ``rotary_embedding``, ``matmul_group`` -> ``matmul``); for places that name
    none, the ops of ``ops/quant.py`` (quantization passes), or opaque nodes (lowerings to
    ONNX Runtime's com.microsoft ops)."""
    from .ops.registry import all_ops

    ops = all_ops()
    named = frozenset(o for o in ops for p in places if _place_makes(p, o))
    if named or not places:
        return named
    if kind == "quantization" or pass_name.startswith("quant"):
        return frozenset(o for o, d in ops.items() if type(d).__module__.endswith(".ops.quant"))
    return frozenset({"opaque"}) if kind == "lowering" else frozenset()


def _explains(f: FiredRule, made: set[str], touched: set[str], folded: bool) -> bool:
    """Does ``f`` explain a place that made ops ``made``, lost or made ``touched``, and (when
    ``folded``) lost only nodes computed from constants?"""
    if f.folds:
        return folded
    if f.places:
        return bool(f.makes & made)
    return bool(f.ops & touched)


def attribute(changes: Changes, rules: Mapping[str, FiredRule]) -> None:
    """Give each region the fired rules that explain it (most specific kind first), and each
    changed node the first of them that explains the node itself (the region's first rule when
    none does: a transpose the attention fusion left beside its ``attention`` node). A region
    holding several nodes a fusion made (two attention blocks joined by the mask computation
    they share) is split: each of its nodes goes with the nearest such node."""
    import networkx as nx

    changes.rules = dict(rules)
    _attribute_regions(changes)
    groups: list[Iterable[tuple[str, Node]]] = []
    for r in changes.regions:
        seeds = [("a", n) for n in r.after if _made_by_its_rule(changes, n)]
        keys = [("b", n) for n in r.before] + [("a", n) for n in r.after]
        if len(seeds) < 2:
            groups.append(keys)
            continue
        _, paths = nx.multi_source_dijkstra(changes.link.subgraph(keys), seeds)
        nearest: dict[tuple[str, Node], list[tuple[str, Node]]] = {}
        for k in keys:
            nearest.setdefault(paths[k][0], []).append(k)
        groups += nearest.values()
    _set_regions(changes, groups)
    changes.rule_of = {}
    _attribute_regions(changes)


def _made_by_its_rule(changes: Changes, n: Node) -> bool:
    """Is ``n`` the kind of node its rule makes (the ``attention`` of attention_flash)?"""
    f = changes.rules.get(changes.rule_of.get(n, ""))
    return f is not None and n.op in f.makes


def _attribute_regions(changes: Changes) -> None:
    rules = changes.rules
    ranked = sorted(rules.values(), key=lambda f: (_kind_rank(f.kind), f.key))
    for r in changes.regions:
        touched = {n.op for n in r.before} | {n.op for n in r.after}
        # a region with nothing new (matmuls merged into another's) is judged by what it lost
        made = {n.op for n in r.after} or touched
        folded = not r.after and all(n in changes.from_constants for n in r.before)
        r.rules = [f.key for f in ranked if _explains(f, made, touched, folded)]
        for n in r.after + r.before:
            own = next((k for k in r.rules if _explains(
                rules[k], {n.op}, {n.op}, n in changes.from_constants)), None)
            if own is not None:
                changes.rule_of[n] = own
            elif r.rules:
                changes.rule_of[n] = r.rules[0]


# ---- graphs as SVG -------------------------------------------------------------------------


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(s: str, n: int = 30) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _type_text(n: Node) -> str:
    t = n.out_types[0] if n.out_types else None
    if isinstance(t, TensorType):
        dims = "?" if t.shape is None else ",".join(str(d) for d in t.shape)
        return f"{t.dtype.value}[{dims}]"
    return ""


def node_label(n: Node) -> str:
    """What a box says: the op (an opaque node's ONNX type), the origin's short name, the
    first output's type."""
    if n.op == "input":
        return f"{n.attrs['name']}\n{_type_text(n)}"
    head = f"opaque:{n.attrs['op_type']}" if n.op == "opaque" else n.op
    name = _short(n.origin.name.rsplit("/", 2)[-1] if "/" in n.origin.name
                  else n.origin.name) if n.origin else f"#{n.uid}"
    return f"{head}\n{name}\n{_short(_type_text(n), 34)}"


def _importance(changes: Changes, reg: Region) -> tuple[int, int]:
    """Regions a cut graph shows first: by their first rule's kind (fusions first), then in
    graph order; regions no rule explains last."""
    rank = _kind_rank(changes.rules[reg.rules[0]].kind) if reg.rules else len(KIND_ORDER) + 1
    return rank, reg.rid


def visible(nodes: Sequence[Node], changes: Changes,
            limit: int = MAX_NODES) -> tuple[list[Node], str]:
    """The nodes to draw and, when the graph is cut, a sentence saying how: the changed
    regions with their direct neighbours, the most important regions first, as many as fit."""
    if len(nodes) <= limit:
        return list(nodes), ""
    users: dict[Node, list[Node]] = {}
    members: dict[int, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            users.setdefault(v.node, []).append(n)
        if n in changes.region_of:
            members.setdefault(changes.region_of[n].rid, []).append(n)
    regions = sorted((changes.regions[rid - 1] for rid in members),
                     key=lambda r: _importance(changes, r))
    keep: list[Node] = []
    seen: set[Node] = set()
    shown = 0
    for reg in regions:
        near = [m for n in members[reg.rid] for m in [*(v.node for v in n.inputs),
                                                      *users.get(n, ())] if m.op != "constant"]
        new = list(dict.fromkeys(m for m in [*members[reg.rid], *near] if m not in seen))
        if len(keep) + len(new) > limit and keep:
            break
        if len(new) > limit:  # one region larger than a readable picture: its first nodes
            order = {n: i for i, n in enumerate(nodes)}
            new = sorted(new, key=order.__getitem__)[:limit]
            return new, (f"{len(nodes)} nodes (more than {limit} would not be readable): "
                         f"showing the first {limit} nodes of changed region R{reg.rid} and "
                         f"its direct neighbours, of {len(regions)} changed regions")
        keep += new
        seen.update(new)
        shown += 1
    order = {n: i for i, n in enumerate(nodes)}
    keep.sort(key=order.__getitem__)
    which = f"all {shown}" if shown == len(regions) else f"{shown} of the {len(regions)}"
    return keep, (f"{len(nodes)} nodes (more than {limit} would not be readable): showing "
                  f"{len(keep)}, {which} changed regions (fusions first) with their direct "
                  f"neighbours")


def graph_dot(g: Graph, side: str, changes: Changes, limit: int = MAX_NODES) -> tuple[str, str]:
    """Graphviz source of one side ("before" or "after") and the cut note ("" if whole)."""
    nodes, note = visible(drawn(g), changes, limit)
    shown = set(nodes)
    pfx = "b" if side == "before" else "a"
    lines = ["digraph G {",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=10, nodesep=0.15, '
             'ranksep=0.3, bgcolor="white"];',
             '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", color="#999999", '
             'fontname="Helvetica", fontsize=9, margin="0.08,0.03"];',
             '  edge [color="#9a9a9a", arrowsize=0.5];']
    clusters: dict[int, list[str]] = {}
    for n in nodes:
        nid = f"{pfx}{n.uid}"
        attrs = {"label": node_label(n), "id": f"{pfx}-{n.uid}"}
        if n.op == "input":
            attrs.update(shape="ellipse", fillcolor="#eeeeee")
        reg = changes.region_of.get(n)
        if reg is not None:
            rule = changes.rules.get(changes.rule_of.get(n, ""))
            verb = "removed" if side == "before" else "made"
            by = f"{verb} by {rule.label}" if rule else (
                "gone" if side == "before" else "new or rewritten") + "; no rule attributed"
            attrs.update(fillcolor=reg.color, color="#333333", penwidth="2.5",
                         URL="#" + (rule.anchor if rule else reg.anchor),
                         tooltip=f"R{reg.rid}: {by}" + (f" [{n.origin}]" if n.origin else ""))
            if side == "before":
                attrs["style"] = "rounded,filled,dashed"
        elif n.origin is not None:
            attrs["tooltip"] = str(n.origin)
        hidden = sum(1 for v in n.inputs if v.node.op != "constant" and v.node not in shown)
        if hidden:
            attrs["label"] += f"\n(+{hidden} inputs not shown)"
        text = f"  {nid} [" + ", ".join(f"{k}={_dot_str(v)}" for k, v in attrs.items()) + "];"
        (clusters.setdefault(reg.rid, []) if reg is not None else lines).append(text)
    for rid, body in clusters.items():
        reg = changes.regions[rid - 1]
        rule = changes.rules.get(reg.rules[0]) if reg.rules else None
        title = f"R{rid}: " + (rule.label if rule else "not attributed")
        lines += [f"  subgraph cluster_{pfx}{rid} {{",
                  f'    label={_dot_str(title)}; style="rounded,dashed"; color="#666666"; '
                  f'fontsize=9; URL="#{reg.anchor}"; id="{pfx}-region-{rid}";', *body, "  }"]
    for n in nodes:
        for v in n.inputs:
            if v.node in shown:
                lines.append(f"  {pfx}{v.node.uid} -> {pfx}{n.uid};")
    if note:  # a cut graph falls apart: stack its pieces in order instead of side by side
        lines += [f'  {pfx}{a.uid} -> {pfx}{b.uid} [style=invis];'
                  for a, b in _pieces_in_order(nodes)]
    for i, (name, v) in enumerate(zip(g.output_names, g.outputs)):
        if v.node in shown:
            lines.append(f'  {pfx}out{i} [label={_dot_str(name)}, shape=ellipse, '
                         f'fillcolor="#eeeeee", id="{pfx}-out-{i}"];')
            lines.append(f"  {pfx}{v.node.uid} -> {pfx}out{i};")
    lines.append("}")
    return "\n".join(lines), note


def _pieces_in_order(nodes: Sequence[Node]) -> list[tuple[Node, Node]]:
    """(last node of a connected piece, first node of the next) over the drawn nodes' pieces,
    in topological order."""
    import networkx as nx

    shown = set(nodes)
    g = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from((v.node, n) for n in nodes for v in n.inputs if v.node in shown)
    order = {n: i for i, n in enumerate(nodes)}
    pieces = sorted((sorted(c, key=order.__getitem__) for c in nx.connected_components(g)),
                    key=lambda c: order[c[0]])
    return [(a[-1], b[0]) for a, b in zip(pieces, pieces[1:])]


def dot_to_svg(src: str) -> str:
    """Lay the graph out with Graphviz's ``dot`` and return the SVG element (no XML prolog)."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphOptError("the HTML report lays graphs out with Graphviz's dot program, which "
                            "is not installed (Debian/Ubuntu: apt-get install graphviz; conda: "
                            "conda install graphviz)", where="html report")
    res = subprocess.run([exe, "-Tsvg"], input=src.encode(), capture_output=True, timeout=300)
    if res.returncode != 0:
        raise GraphOptError(f"Graphviz dot failed: {res.stderr.decode(errors='replace')[:400]}",
                            where="html report")
    svg = res.stdout.decode()
    start = svg.find("<svg")
    if start < 0:
        raise GraphOptError("Graphviz dot wrote no <svg> element", where="html report")
    return re.sub(r"<!--.*?-->\n?", "", svg[start:], flags=re.S)


# ---- the page ------------------------------------------------------------------------------

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:1.2em 2em;color:#222;font-size:14px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:bold}.ok{color:#1b7a1b;font-weight:bold}
.graph{border:1px solid #ccc;margin-bottom:1em}.graph svg{max-width:100%;height:auto}
#actual:checked~.graphs svg{max-width:none}
.graph h3{margin:.3em .5em}.graph .svgbox{overflow:auto;max-height:85vh}
.note{background:#fff8d0;padding:.3em .6em;margin:.3em .5em}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;border:1px solid #888}
section.rule{border-left:4px solid #bbb;padding:.1em .8em;margin:.6em 0}
section.rule:target,tr:target{background:#fff3b0}
code{background:#f4f4f4;padding:0 3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _doc(text: str) -> str:
    """Docstring text as HTML: escaped, ``literals`` as <code>."""
    return re.sub(r"``(.+?)``", r"<code>\1</code>", _e(text))


def _ops_list(nodes: Iterable[Node]) -> str:
    c = Counter(f"opaque:{n.attrs['op_type']}" if n.op == "opaque" else n.op for n in nodes)
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in sorted(c.items())) or "–"


def op_table(before: Mapping[str, Any], after: Mapping[str, Any], names: Sequence[str]) -> str:
    """Before/after counts per op, then nodes and parameter sizes."""
    bo, ao = before["ops"], after["ops"]
    rows = [f"<tr><th>op</th><th>{_e(names[0])}</th><th>{_e(names[1])}</th><th>change</th></tr>"]
    for k in sorted(set(bo) | set(ao)):
        x, y = bo.get(k, 0), ao.get(k, 0)
        d = y - x
        rows.append(f"<tr><td>{_e(k)}</td><td class=n>{x}</td><td class=n>{y}</td>"
                    f"<td class=n>{'' if d == 0 else f'{d:+d}'}</td></tr>")
    for label, key, fmt in (("nodes", "nodes", str), ("parameters", "params", str),
                            ("parameter bytes", "param_bytes", human_bytes)):
        rows.append(f"<tr><th>{label}</th><td class=n>{_e(fmt(before[key]))}</td>"
                    f"<td class=n>{_e(fmt(after[key]))}</td><td></td></tr>")
    return "<table id=op-table>" + "".join(rows) + "</table>"


def check_table(chk: Mapping[str, Any] | None) -> str:
    """The numeric check: reference, inputs, and per output max abs / rel error and ok."""
    if not chk:
        return "<p>No numeric check was run.</p>"
    state = '<span class=ok>ok</span>' if chk.get("ok") else '<span class=bad>MISMATCH</span>'
    ins = ", ".join(f"{k}: {v}" for k, v in (chk.get("inputs") or {}).items())
    out = [f"<p>Against {_e(chk.get('reference', 'the original'))}: {state}"
           + (f"; inputs {_e(ins)}" if ins else "") + "</p>"]
    rows = ["<tr><th>output</th><th>type</th><th>max abs</th><th>max rel</th>"
            "<th>mismatched</th><th>SQNR dB</th><th>ok</th><th>reason</th></tr>"]
    for o in chk.get("outputs") or []:
        shape = o.get("shape")
        typ = f"{o.get('dtype', '')}{list(shape) if shape is not None else ''}"
        sq = o.get("sqnr_db")
        rows.append(
            f"<tr><td>{_e(o.get('name'))}</td><td>{_e(typ)}</td>"
            f"<td class=n>{_e(_num(o.get('max_abs')))}</td>"
            f"<td class=n>{_e(_num(o.get('max_rel')))}</td>"
            f"<td class=n>{_e(o.get('mismatched', ''))}</td>"
            f"<td class=n>{_e('' if sq is None else _num(sq))}</td>"
            f"<td>{'<span class=ok>yes</span>' if o.get('ok') else '<span class=bad>no</span>'}"
            f"</td><td>{_e(o.get('reason') or '')}</td></tr>")
    return "\n".join(out) + "<table id=check-table>" + "".join(rows) + "</table>"


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return "" if x is None else str(x)


def latency_rows(latency: Mapping[str, Any]) -> list[tuple[str, float, float | None,
                                                           float | None]]:
    """(label, median ms, low ms, high ms) per measured model. Each value is a number (the
    median in ms) or a mapping with ``median_ms`` and optionally ``min_ms`` / ``max_ms`` (or
    ``q1_ms`` / ``q3_ms``, ``p10_ms`` / ``p90_ms``, or a symmetric ``spread_ms``)."""
    rows = []
    for label, v in latency.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append((str(label), float(v), None, None))
            continue
        if not isinstance(v, Mapping) or "median_ms" not in v:
            raise GraphOptError(f"latency of {label!r} must be milliseconds or a mapping with "
                                f"median_ms, not {v!r}", where="html report")
        med = float(v["median_ms"])
        lo = v.get("min_ms", v.get("q1_ms", v.get("p10_ms")))
        hi = v.get("max_ms", v.get("q3_ms", v.get("p90_ms")))
        if lo is None and "spread_ms" in v:
            lo, hi = med - float(v["spread_ms"]), med + float(v["spread_ms"])
        rows.append((str(label), med, None if lo is None else float(lo),
                     None if hi is None else float(hi)))
    return rows


def latency_svg(latency: Mapping[str, Any]) -> str:
    """A horizontal bar chart of median latencies (whiskers: the given spread), inline SVG."""
    rows = latency_rows(latency)
    if not rows:
        return ""
    top = max(max(m, hi or m) for _, m, _, hi in rows) or 1.0
    bar_w, left, h = 420.0, 170, 26
    out = [f'<svg id=latency-chart xmlns="http://www.w3.org/2000/svg" width="{left + bar_w + 140}"'
           f' height="{h * len(rows) + 24}" font-family="Helvetica" font-size="12">']
    for i, (label, med, lo, hi) in enumerate(rows):
        y = 8 + i * h
        w = bar_w * med / top
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{_e(_short(label, 26))}'
                   f'</text><rect class=bar x="{left}" y="{y + 3}" width="{w:.1f}" height="16" '
                   f'fill="{PALETTE[i % len(PALETTE)]}" stroke="#555"><title>{_e(label)}: '
                   f'median {med:.4g} ms</title></rect>')
        if lo is not None and hi is not None:
            x0, x1 = left + bar_w * lo / top, left + bar_w * hi / top
            out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + 11}" y2="{y + 11}" '
                       f'stroke="#000"/><line x1="{x0:.1f}" x2="{x0:.1f}" y1="{y + 6}" '
                       f'y2="{y + 16}" stroke="#000"/><line x1="{x1:.1f}" x2="{x1:.1f}" '
                       f'y1="{y + 6}" y2="{y + 16}" stroke="#000"/>')
        out.append(f'<text x="{left + max(w, (hi or 0) and bar_w * hi / top) + 6:.1f}" '
                   f'y="{y + 15}">{med:.4g} ms</text>')
    base = rows[0][1]
    out.append("</svg>")
    ratios = ", ".join(f"{_e(lbl)} {base / m:.2f}×" for lbl, m, _, _ in rows[1:] if m > 0)
    return "".join(out) + (f"<p>Speed against {_e(rows[0][0])}: {ratios}</p>" if ratios else "")


_NO_REGION = "none drawn (the nodes it changed are constants or were changed again later)"


def rules_html(changes: Changes) -> str:
    """One section per fired rule counter: what the rules do, the pass, where they acted."""
    if not changes.rules:
        return "<p>No rule records (a diff of two files: nodes are marked by side only).</p>"
    where: dict[str, list[int]] = {}
    for r in changes.regions:
        for k in r.rules:
            where.setdefault(k, []).append(r.rid)
    out = []
    for f in sorted(changes.rules.values(), key=lambda f: (_kind_rank(f.kind), f.key)):
        regs = " ".join(f'<a href="#region-{i}">R{i}</a>' for i in where.get(f.key, []))
        docs = "".join(f"<li><code>{_e(n)}</code>" + (f": {_doc(d)}" if d else "") + "</li>"
                       for n, d in f.rules)
        out.append(
            f'<section class=rule id="{f.anchor}"><h3>{_e(f.label)}</h3>'
            f"<p>{_e(f.kind)} · "
            + ", ".join(f"<code>{_e(f.pass_name)}.{_e(k)}</code> = {v}"
                        for k, v in f.counters.items())
            + (f" · spellings proven in <code>{_e(f.rules_file)}</code>" if f.rules_file else "")
            + "</p>" + (f"<p>{_doc(f.pass_doc)}</p>" if f.pass_doc else "")
            + (f"<ul>{docs}</ul>" if docs else "")
            + f"<p>Regions: {regs or _NO_REGION}</p></section>")
    return "\n".join(out)


def regions_html(changes: Changes, names: Sequence[str]) -> str:
    if not changes.regions:
        return "<p>No node changed.</p>"
    rows = [f"<tr><th>region</th><th>rule</th><th>{_e(names[0])} (removed)</th>"
            f"<th>{_e(names[1])} (new or rewritten)</th></tr>"]
    for r in changes.regions:
        links = ", ".join(f'<a href="#{changes.rules[k].anchor}">{_e(changes.rules[k].label)}</a>'
                          for k in r.rules) or "not attributed"
        rows.append(f'<tr id="{r.anchor}"><td><span class=swatch style="background:{r.color}">'
                    f"</span> R{r.rid}</td><td>{links}</td><td>{_e(_ops_list(r.before))}</td>"
                    f"<td>{_e(_ops_list(r.after))}</td></tr>")
    return "<table id=regions>" + "".join(rows) + "</table>"


def graphs_html(before: Graph, after: Graph, changes: Changes, names: Sequence[str],
                limit: int = MAX_NODES) -> str:
    parts = []
    for side, g, name in (("before", before, names[0]), ("after", after, names[1])):
        src, note = graph_dot(g, side, changes, limit)
        parts.append(f'<div class=graph id="graph-{side}"><h3>{_e(name)}</h3>'
                     + (f"<p class=note>{_e(note)}</p>" if note else "")
                     + f"<div class=svgbox>{dot_to_svg(src)}</div></div>")
    return "<div class=graphs>" + "".join(parts) + "</div>"


def render_page(title: str, report: Mapping[str, Any], before: Graph, after: Graph,
                changes: Changes, names: Sequence[str] = ("before", "after"),
                latency: Mapping[str, Any] | None = None, limit: int = MAX_NODES) -> str:
    """The whole page as one string."""
    b, a = report["before"], report["after"]
    n_changed = sum(1 for s in changes.after_status.values() if s == "changed")
    n_removed = sum(1 for s in changes.before_status.values() if s == "removed")
    steps = report.get("steps") or {}
    head = [f"<p>{_e(names[0])}: {b['nodes']} nodes; {_e(names[1])}: {a['nodes']} nodes. "
            f"{n_removed} nodes removed, {n_changed} new or rewritten, in "
            f"{len(changes.regions)} regions.</p>"]
    if report.get("target"):
        head.append(f"<p>Source {_e(report.get('source', ''))}, target "
                    f"<code>{_e(report['target'])}</code>"
                    + (". Steps: " + ", ".join(f"{_e(k)} {v:.2f} s" for k, v in steps.items())
                       if steps else "") + ".</p>")
    legend = ("<p>Highlighted (filled in their region's colour): in the first graph (above) "
              "the nodes that are gone (dashed border), in the second (below) the new or "
              "rewritten nodes (solid border). Boxes framed together are one region; click a highlighted node for the "
              "rule that made it (or its region when no rule is known). Constants are not "
              "drawn. Layout: Graphviz dot.</p>")
    body = [f"<h1>{_e(title)}</h1>", *head,
            "<h2 id=graphs-title>Graphs</h2>", legend,
            "<input type=checkbox id=actual><label for=actual> draw the graphs at their "
            "actual size (default: fitted to the page width; hover a node for its origin)"
            "</label>",
            graphs_html(before, after, changes, names, limit),
            "<h2>Changed regions</h2>", regions_html(changes, names),
            "<h2>Rules that fired</h2>", rules_html(changes),
            "<h2>Ops</h2>", op_table(b, a, names)]
    if report.get("target") is not None or report.get("check") is not None:
        body += ["<h2>Numeric check</h2>", check_table(report.get("check"))]
    if latency:
        body += ["<h2>Latency</h2>", latency_svg(latency)]
    if report.get("opaque"):
        rows = "".join(f"<tr><td>{_e(o['name'])}</td><td>{_e(o['op_type'])}</td>"
                       f"<td>{_e(o['reason'])}</td></tr>" for o in report["opaque"])
        body += ["<h2>Opaque nodes (not optimized)</h2>",
                 f"<table><tr><th>node</th><th>op type</th><th>reason</th></tr>{rows}</table>"]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` (UTF-8) next to ``path`` and rename it into place (never a partial file;
    ``onnx_io.AtomicFiles``)."""
    from .frontends.onnx_io import AtomicFiles

    with AtomicFiles() as af:
        af.open(Path(os.fspath(path))).write(text.encode("utf-8"))


def write_html(report: dict[str, Any], before: Graph, after: Graph,
               path: str | os.PathLike[str], *, latency: dict[str, Any] | None = None,
               limit: int = MAX_NODES) -> None:
    """The page of one optimization run (``report`` is ``OptimizedModel.report``, ``before`` /
    ``after`` its ``original`` / ``graph``), written atomically to ``path``. ``latency``: label
    -> median ms, or -> {"median_ms", "min_ms"/"max_ms" or "spread_ms"} (first label: the
    baseline of the speed ratios)."""
    changes = compare(before, after)
    ops = {n.op for g in (before, after) for n in g.nodes}
    attribute(changes, fired_rules(report, ops - {"input", "constant", "opaque"}))
    title = f"graphopt: {report.get('source', 'model')}"
    write_text_atomic(render_page(title, report, before, after, changes,
                                  ("original", "optimized"), latency, limit), path)


@dataclass
class Diff:
    """Two ONNX files compared: the graphs, their display names, summaries and changes."""

    a: Graph
    b: Graph
    names: tuple[str, str]
    report: dict[str, Any]
    changes: Changes

    def text(self) -> str:
        """The op table and how many nodes only each side has, in how many regions."""
        from .report import comparison_table

        ra, rb = self.report["before"], self.report["after"]
        only_a = sum(1 for s in self.changes.before_status.values() if s == "removed")
        only_b = sum(1 for s in self.changes.after_status.values() if s == "changed")
        table = comparison_table(ra["ops"], rb["ops"], [
            ("nodes", str(ra["nodes"]), str(rb["nodes"])),
            ("param bytes", human_bytes(ra["param_bytes"]), human_bytes(rb["param_bytes"]))])
        return (f"{table}\nbefore: {self.names[0]}, after: {self.names[1]}\n{only_a} nodes "
                f"only before, {only_b} only after (new or rewritten), in "
                f"{len(self.changes.regions)} regions")


def diff(a_path: str | os.PathLike[str], b_path: str | os.PathLike[str]) -> Diff:
    """Compare two ONNX files (each loaded with ``graphopt.load``): nodes matched by ONNX node
    name, op, attributes and types, or by structure where nodes have no name."""
    from .api import load

    a, b = load(os.fspath(a_path)), load(os.fspath(b_path))
    names = (os.path.basename(os.fspath(a_path)), os.path.basename(os.fspath(b_path)))
    if names[0] == names[1]:
        names = (os.fspath(a_path), os.fspath(b_path))
    report = {"before": graph_summary(a), "after": graph_summary(b)}
    return Diff(a, b, names, report, compare(a, b))


def diff_html(a_path: str | os.PathLike[str], b_path: str | os.PathLike[str],
              out_path: str | os.PathLike[str], *, limit: int = MAX_NODES) -> Diff:
    """The page comparing two ONNX files: nodes only in A and nodes only in B highlighted, no
    rule attribution (the files carry no record of rewrites); returns the comparison (its
    ``text()`` for a terminal)."""
    d = diff(a_path, b_path)
    write_text_atomic(render_page(f"graphopt diff: {d.names[0]} vs {d.names[1]}", d.report,
                                  d.a, d.b, d.changes, d.names, None, limit), out_path)
    return d
