"""The HTML report: one self-contained page that shows what an optimization changed.

``write_html(report, before, after, path)`` writes the page for one ``optimize`` run;
``diff_html(a_path, b_path, out_path)`` the page for two ONNX files. The page holds the before /
after graphs (laid out by Graphviz's ``dot``, inlined as SVG), the changed regions highlighted
in both graphs and linked to the rule that made them, the op table, the check's errors per
output and, when given, a latency bar chart (inline SVG). Nothing on it is fetched from a
network; it has no script.

Provenance. A node's ``Origin`` (the frontend's node name) survives rewrites: a rule builds its
replacement with the origin of the node it replaces (the fused ``attention`` node carries the
Softmax's origin). So a node of the optimized graph is *kept* when the original holds a node with
the same origin, op and attributes (or the very same node), otherwise *changed*; a node of the
original with no such twin was *removed*. Changed and removed nodes form *regions*: connected
within their graph, and joined across the graphs where they share an origin. Which rule made a
region is read from the report's counters (``report["rewrites"]``, ``pass.counter``; the
search's ``rules_applied``) and the rules of the passes that own them: a fusion or lowering rule
owns the regions whose new nodes are of the op its place names (``attention`` for the place
``attention``), a cleanup / canonical / search rule those whose removed nodes are of the op it
is about (``cast_noop``: cast; a search rule: its pattern's root op). Regions no fired rule
explains are shown as "not attributed" (constant folding and CSE leave no per-node record).

Big graphs: over ``MAX_NODES`` drawn nodes, a graph shows only its changed regions with their
direct neighbours (and, if that is still too many, the first regions that fit); the page says
so above the graph.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import GraphOptError
from .ir.graph import Graph
from .ir.node import Node
from .ir.types import TensorType
from .report import graph_summary, human_bytes

MAX_NODES = 400  # drawn nodes per graph before the graph is cut to its changed regions
PALETTE = ("#ffb3ba", "#bae1ff", "#baffc9", "#ffdfba", "#e0bbff", "#fff5ba", "#c9f2ff",
           "#ffc9f0", "#d5f5b0", "#f5d0b0")
KIND_ORDER = ("fusion", "lowering", "quantization", "tensor_parallel", "search", "generated",
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
    """A counter the run reported (``pass.counter``) and the rules of that pass behind it."""

    key: str  # "pass.counter", or "search.<rule>"
    pass_name: str
    counter: str
    count: int
    kind: str
    places: tuple[str, ...]  # the rules' place kinds ("attention"); empty for unplaced rules
    ops: frozenset[str]  # ops an unplaced rule is about (the counter's first word, anchors)
    rules: tuple[tuple[str, str], ...]  # (rule name, what it does)
    pass_doc: str
    rules_file: str  # passes/rules/<pass>.rules when the pass states its spellings there

    @property
    def anchor(self) -> str:
        return "rule-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.key)

    @property
    def label(self) -> str:
        names = ", ".join(n for n, _ in self.rules) or self.counter
        return f"{names} ({self.pass_name})"


@dataclass
class Changes:
    """The comparison of two graphs: each drawn node's status, the regions, the fired rules."""

    before_status: dict[Node, str]  # "kept" | "removed"
    after_status: dict[Node, str]  # "kept" | "changed"
    regions: list[Region]
    region_of: dict[Node, Region]
    rules: dict[str, FiredRule]


def drawn(g: Graph) -> list[Node]:
    """The nodes a picture shows: every node but constants (weights and folded values)."""
    return [n for n in g.nodes if n.op != "constant"]


def _same_attrs(a: Node, b: Node) -> bool:
    return a.op == b.op and a.attrs == b.attrs


def compare(before: Graph, after: Graph) -> Changes:
    """Kept / changed / removed nodes and their regions (see the module docstring)."""
    import networkx as nx

    b_nodes, a_nodes = drawn(before), drawn(after)
    b_set = set(b_nodes)
    by_origin: dict[Any, list[Node]] = {}
    for n in b_nodes:
        if n.origin is not None:
            by_origin.setdefault(n.origin, []).append(n)
    after_status: dict[Node, str] = {}
    twins: set[Node] = set()
    for n in a_nodes:
        twin = n if n in b_set else next(
            (m for m in by_origin.get(n.origin, ()) if _same_attrs(m, n)), None)
        if twin is None and n.op == "input":
            twin = next((m for m in before.inputs if m.attrs == n.attrs), None)
        after_status[n] = "changed" if twin is None else "kept"
        if twin is not None:
            twins.add(twin)
    before_status = {n: "kept" if n in twins else "removed" for n in b_nodes}

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
                if before_status[m] == "removed":
                    link.add_edge(("a", n), ("b", m))
    order = {("b", n): i for i, n in enumerate(b_nodes)}
    order.update({("a", n): len(order) + i for i, n in enumerate(a_nodes)})
    comps = sorted((sorted(c, key=order.__getitem__) for c in nx.connected_components(link)),
                   key=lambda c: order[c[0]])
    regions: list[Region] = []
    region_of: dict[Node, Region] = {}
    for i, comp in enumerate(comps, 1):
        r = Region(i, [n for s, n in comp if s == "b"], [n for s, n in comp if s == "a"])
        regions.append(r)
        for n in r.before + r.after:
            region_of[n] = r
    return Changes(before_status, after_status, regions, region_of, {})


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip()
    return " ".join(text.split("\n\n", 1)[0].split())


def _pass_index(target: str) -> dict[str, Any]:
    """The passes ``optimize`` runs (fusions with contrib ops, the simplify set) by name."""
    from graphopt.passes.fusions import fusion_passes

    from .pipeline import default_passes

    out: dict[str, Any] = {}
    for p in [*default_passes(), *fusion_passes(target, allow_contrib_ops=True)]:
        out.setdefault(p.name, p)
    return out


def _rules_file(pass_name: str) -> str:
    import graphopt.passes as passes_pkg

    rel = os.path.join("rules", f"{pass_name}.rules")
    base = os.path.dirname(os.path.abspath(passes_pkg.__file__))
    return f"passes/rules/{pass_name}.rules" if os.path.exists(os.path.join(base, rel)) else ""


def _rule_doc(r: Any) -> str:
    from .rewrite.rule import PatternRule

    doc = type(r).__doc__
    if isinstance(r, PatternRule) or not doc:  # a pattern rule's class docstring is generic
        return ""
    return _first_paragraph(doc)


def fired_rules(report: Mapping[str, Any]) -> dict[str, FiredRule]:
    """The run's rewrite counters (``report["rewrites"]`` and the search's ``rules_applied``)
    with the rules behind each, described from the passes' own docstrings."""
    index = _pass_index(str(report.get("target") or "cpu"))
    out: dict[str, FiredRule] = {}
    for key, count in (report.get("rewrites") or {}).items():
        pass_name, _, counter = key.partition(".")
        p = index.get(pass_name)
        rules = [r for r in getattr(p, "rules", ()) if r.name == counter or (
            r.place and counter.startswith(r.place + "_"))]
        kind = min((r.kind for r in rules), key=_kind_rank, default="cleanup")
        places = tuple(sorted({r.place for r in rules if r.place and counter != r.name}))
        ops = frozenset({counter.split("_")[0]} | {o for r in rules if not places
                                                   for o in (r.anchors or ())})
        out[key] = FiredRule(key, pass_name, counter, int(count), kind, places, ops,
                             tuple((r.name, _rule_doc(r)) for r in rules),
                             _first_paragraph(type(p).__doc__) if p is not None else "",
                             _rules_file(pass_name))
    applied = (report.get("search") or {}).get("rules_applied") or {}
    if applied:
        from .pipeline import search_rules

        by_name = {r.name: r for r in search_rules()}
        for name, count in applied.items():
            r = by_name.get(name)
            if r is None:
                raise GraphOptError(f"the report names search rule {name!r}, which the search's "
                                    f"rule set does not hold", where="html report")
            key = f"search.{name}"
            out[key] = FiredRule(key, "search", name, int(count), r.kind, (),
                                 frozenset(r.anchors or ()), ((name, _rule_doc(r)),),
                                 "Cost-ordered backtracking search over the generated and "
                                 "hand-written search rules (TASO).", "")
    return out


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _place_makes(place: str, op: str) -> bool:
    return op == place or op.startswith(place) or place.startswith(op)


def attribute(changes: Changes, rules: Mapping[str, FiredRule]) -> None:
    """Give each region the fired rules that explain it (most specific kind first)."""
    changes.rules = dict(rules)
    for r in changes.regions:
        made = {n.op for n in r.after}
        touched = {n.op for n in r.before} | made
        hits = [f for f in rules.values()
                if (f.places and any(_place_makes(p, o) for p in f.places for o in made))
                or (not f.places and f.ops & touched)]
        hits.sort(key=lambda f: (_kind_rank(f.kind), f.key))
        r.rules = [f.key for f in hits]


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


def visible(nodes: Sequence[Node], status: Mapping[Node, str], region_of: Mapping[Node, Region],
            limit: int = MAX_NODES) -> tuple[list[Node], str]:
    """The nodes to draw and, when the graph is cut, a sentence saying how."""
    if len(nodes) <= limit:
        return list(nodes), ""
    hot = {n for n in nodes if n in region_of}
    users: dict[Node, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            users.setdefault(v.node, []).append(n)
    keep: list[Node] = []
    seen: set[Node] = set()
    regions = sorted({region_of[n].rid for n in hot})
    for rid in regions:
        members = [n for n in nodes if n in hot and region_of[n].rid == rid]
        near = {m for n in members for m in [*(v.node for v in n.inputs), *users.get(n, ())]
                if m.op != "constant"}
        new = [n for n in nodes if (n in members or n in near) and n not in seen]
        if len(keep) + len(new) > limit and keep:
            shown = sum(1 for r in regions if r < rid)
            return keep, (f"{len(nodes)} nodes: showing {len(keep)}, the first {shown} of "
                          f"{len(regions)} changed regions with their direct neighbours "
                          f"(more than {limit} nodes would not be readable)")
        keep += new
        seen.update(new)
    order = {n: i for i, n in enumerate(nodes)}
    keep.sort(key=order.__getitem__)
    return keep, (f"{len(nodes)} nodes: showing {len(keep)}, the {len(regions)} changed "
                  f"regions with their direct neighbours (more than {limit} nodes would not be "
                  f"readable)")


def graph_dot(g: Graph, side: str, changes: Changes, limit: int = MAX_NODES) -> tuple[str, str]:
    """Graphviz source of one side ("before" or "after") and the cut note ("" if whole)."""
    status = changes.before_status if side == "before" else changes.after_status
    nodes, note = visible(drawn(g), status, changes.region_of, limit)
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
            rule = changes.rules.get(reg.rules[0]) if reg.rules else None
            verb = "removed" if side == "before" else "made"
            by = f"{verb} by {rule.label}" if rule else f"{verb}; no rule attributed"
            attrs.update(fillcolor=reg.color, color="#333333", penwidth="2.5", URL="#" + (rule.anchor if rule else reg.anchor),
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
    for i, (name, v) in enumerate(zip(g.output_names, g.outputs)):
        if v.node in shown:
            lines.append(f'  {pfx}out{i} [label={_dot_str(name)}, shape=ellipse, '
                         f'fillcolor="#eeeeee", id="{pfx}-out-{i}"];')
            lines.append(f"  {pfx}{v.node.uid} -> {pfx}out{i};")
    lines.append("}")
    return "\n".join(lines), note


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
.graphs{display:flex;gap:1em;align-items:flex-start}
.graph{flex:1 1 50%;min-width:0;border:1px solid #ccc}
.graph h3{margin:.3em .5em}.graph .svgbox{overflow:auto;max-height:85vh}
.note{background:#fff8d0;padding:.3em .6em;margin:.3em .5em}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;border:1px solid #888}
section.rule{border-left:4px solid #bbb;padding:.1em .8em;margin:.6em 0}
section.rule:target,tr:target{background:#fff3b0}
code{background:#f4f4f4;padding:0 3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


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
    ``p10_ms`` / ``p90_ms``, or a symmetric ``spread_ms``)."""
    rows = []
    for label, v in latency.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append((str(label), float(v), None, None))
            continue
        if not isinstance(v, Mapping) or "median_ms" not in v:
            raise GraphOptError(f"latency of {label!r} must be milliseconds or a mapping with "
                                f"median_ms, not {v!r}", where="html report")
        med = float(v["median_ms"])
        lo = v.get("min_ms", v.get("p10_ms"))
        hi = v.get("max_ms", v.get("p90_ms"))
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
        docs = "".join(f"<li><code>{_e(n)}</code>" + (f": {_e(d)}" if d else "") + "</li>"
                       for n, d in f.rules)
        out.append(
            f'<section class=rule id="{f.anchor}"><h3>{_e(f.label)}</h3>'
            f"<p>{_e(f.kind)} · counter <code>{_e(f.key)}</code> = {f.count}"
            + (f" · spellings proven in <code>{_e(f.rules_file)}</code>" if f.rules_file else "")
            + "</p>" + (f"<p>{_e(f.pass_doc)}</p>" if f.pass_doc else "")
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
    legend = ("<p>Highlighted (filled in their region's colour): in the first graph the nodes "
              "that are gone (dashed border), in the second the new or rewritten nodes (solid "
              "border). Boxes framed together are one region; click a highlighted node for the "
              "rule that made it (or its region when no rule is known). Constants are not "
              "drawn. Layout: Graphviz dot.</p>")
    body = [f"<h1>{_e(title)}</h1>", *head,
            "<h2 id=graphs-title>Graphs</h2>", legend,
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
    """Write ``text`` next to ``path`` and rename it into place (never a partial file)."""
    p = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".html",
                               dir=os.path.dirname(os.path.abspath(p)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_html(report: dict[str, Any], before: Graph, after: Graph,
               path: str | os.PathLike[str], *, latency: dict[str, Any] | None = None,
               limit: int = MAX_NODES) -> None:
    """The page of one optimization run (``report`` is ``OptimizedModel.report``, ``before`` /
    ``after`` its ``original`` / ``graph``), written atomically to ``path``. ``latency``: label
    -> median ms, or -> {"median_ms", "min_ms"/"max_ms" or "spread_ms"} (first label: the
    baseline of the speed ratios)."""
    changes = compare(before, after)
    attribute(changes, fired_rules(report))
    title = f"graphopt: {report.get('source', 'model')}"
    write_text_atomic(render_page(title, report, before, after, changes,
                                  ("original", "optimized"), latency, limit), path)


def diff_html(a_path: str | os.PathLike[str], b_path: str | os.PathLike[str],
              out_path: str | os.PathLike[str], *, limit: int = MAX_NODES) -> None:
    """The page comparing two ONNX files (each loaded with ``graphopt.load``): nodes only in A
    and nodes only in B (matched by ONNX node name, op and attributes) highlighted; no rule
    attribution (the files carry no record of rewrites)."""
    from .api import load

    a, b = load(os.fspath(a_path)), load(os.fspath(b_path))
    names = (os.path.basename(os.fspath(a_path)), os.path.basename(os.fspath(b_path)))
    if names[0] == names[1]:
        names = (os.fspath(a_path), os.fspath(b_path))
    report = {"before": graph_summary(a), "after": graph_summary(b)}
    changes = compare(a, b)
    write_text_atomic(render_page(f"graphopt diff: {names[0]} vs {names[1]}", report, a, b,
                                  changes, names, None, limit), out_path)
