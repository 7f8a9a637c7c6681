"""Saturate an encoded graph under the translated rules within a budget, and read the e-graph
back as an ``EGraphView`` with per-e-node costs from the target's ``CostModel``.

Schedule, one iteration: the ``analysis`` rules (``is_const``) to saturation, then one run of
the merge rules and the cheap generated rules, and one run of the expansive rules (more nodes
on the right side, several roots, kernel enlargement) while ``expand_iterations`` last. After
every iteration the e-node count and the clock are checked, and the next iteration's size and
time are predicted from the last growth factor and slowdown: saturation stops before an
iteration that would pass the e-node cap or the time limit, not after it (an egglog run cannot
be interrupted).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import GraphOptError
from ...ir.node import Node, Value, input_node
from ...ir.types import DType, TensorType
from .encode import Encoded, declarations, plain_attrs
from .rules import ANALYSIS, CHEAP, EXPAND, FACT_DECLS, MERGE, Translation, analysis_rules, \
    facts
from .view import EGraphView, ENode, NodeRef

DEFAULT_NODE_LIMIT = 100_000
DEFAULT_TIME_LIMIT = 10.0
DEFAULT_EXPAND_ITERATIONS = 2
DEFAULT_MAX_ITERATIONS = 30
DEFAULT_MAX_PAIRS = 200_000  # (consumer, producer) pairs priced for fusion savings


@dataclass(frozen=True)
class Term:
    """What an e-node is, for decoding: ``kind`` "op" (``op``, attrs ``literal``, ``dims``: its
    dim-valued attrs as i64 tuples), "leaf" (side-table ``index``), "out" (output ``index`` of
    its child node) or "root"."""

    kind: str
    op: str = ""
    literal: str = ""
    dims: tuple[tuple[int, ...], ...] = ()
    index: int = 0


@dataclass
class Stats:
    """How saturation went."""

    iterations: int = 0
    enodes: int = 0
    seconds: float = 0.0
    stopped: str = ""  # "saturated" | "node-limit" | "time" | "iterations"
    rules: int = 0
    untranslated: dict[str, int] = field(default_factory=dict)  # reason -> rule directions
    sizes: list[int] = field(default_factory=list)  # e-nodes after each iteration
    unpriced: int = 0  # e-nodes left out of the view: input types unknown or refused

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "enodes": self.enodes,
                "seconds": round(self.seconds, 4), "stopped": self.stopped,
                "egglog_rules": self.rules, "untranslated": dict(sorted(
                    self.untranslated.items())), "sizes": list(self.sizes),
                "unpriced": self.unpriced}


@dataclass
class Saturated:
    """A saturated e-graph: the view extraction reads, each e-node's term, each class's type
    (i64 shape, dtype) and which rules made nodes in it (``made``: class -> {(rule,
    constructor)})."""

    view: EGraphView
    terms: dict[NodeRef, Term]
    types: dict[str, tuple[tuple[int, ...], str]]
    made: dict[str, set[tuple[str, str]]]
    stats: Stats
    original: set[NodeRef] = field(default_factory=set)  # the input graph's e-nodes


def _chunks(text: str, lines: int = 200) -> list[str]:
    """A program in pieces of about ``lines`` lines, cut between top-level commands."""
    out, cur, depth, n = [], [], 0, 0
    for line in text.splitlines():
        cur.append(line)
        bare = re.sub(r'"[^"]*"', "", line)
        depth += bare.count("(") - bare.count(")")
        n += 1
        if depth == 0 and n >= lines:
            out.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        out.append("\n".join(cur))
    return out


def _next_time(took: list[float], growth: float) -> float:
    """The predicted time of the next iteration: the last one's times the larger of the
    e-graph's growth and the last iteration's slowdown (matching time can grow far faster
    than the e-graph: BERT's third iteration took 240 s after 0.25 s and 2 s)."""
    if not took:
        return 0.0
    slow = took[-1] / took[-2] if len(took) > 1 and took[-2] > 0 else 1.0
    return took[-1] * max(growth, slow, 1.0)


def _size(eg: Any, ctor_names: set[str]) -> int:
    """E-nodes of the term constructors (function rows of shapes etc. not counted)."""
    out = eg.run_program(*eg.parse_program("(print-size)"))
    return sum(int(n) for name, n in out[-1].sizes if name in ctor_names)


def saturate(enc: Encoded, tr: Translation, cost: Callable[[Node], float], *,
             node_limit: int = DEFAULT_NODE_LIMIT, time_limit: float = DEFAULT_TIME_LIMIT,
             expand_iterations: int = DEFAULT_EXPAND_ITERATIONS,
             max_iterations: int = DEFAULT_MAX_ITERATIONS,
             pair_cost: Callable[[Node, Node], float] | None = None,
             max_pairs: int = DEFAULT_MAX_PAIRS,
             progress: Callable[[str], None] | None = None) -> Saturated:
    """Run ``tr``'s rules over ``enc`` under the budget; ``cost(node)`` prices one graphopt
    node alone (seconds); ``pair_cost`` (optional) prices fused pairs (``read``)."""
    from egglog import bindings

    t0 = time.perf_counter()
    ctors = set(enc.ctors)
    for r in tr.rules:
        ctors.update(r.ctors)
    prog = [declarations(ctors, [enc.n_outputs]), FACT_DECLS,
            *(f"(ruleset {s})" for s in (CHEAP, EXPAND, MERGE, ANALYSIS)),
            analysis_rules(ctors), *(r.text for r in tr.rules), facts(
                v.node for v in enc.values.values()), enc.term]
    eg = bindings.EGraph()
    # one command at a time: egglog's parser is superlinear in a program's length (412 rules
    # in one program took 34 s, one by one 0.4 s)
    for part in prog:
        for chunk in _chunks(part):
            try:
                eg.run_program(*eg.parse_program(chunk))
            except Exception as ex:  # egglog's own error type; name the program part
                raise GraphOptError(f"egglog refused the encoded graph or rules: {ex}",
                                    where="egraph saturate") from ex
    names = {"Leaf", "Out"} | {f"Root{enc.n_outputs}"} | {
        f"{op}_{k}{'n' if m else ''}" for op, k, m in ctors}
    stats = Stats(rules=len(tr.rules))
    for reason in tr.skipped.values():
        key = reason.split(" (")[0]
        stats.untranslated[key] = stats.untranslated.get(key, 0) + 1
    size = _size(eg, names)
    stats.sizes.append(size)
    growth = 1.0
    took: list[float] = []  # seconds of each iteration
    stopped = "iterations"
    for it in range(max_iterations):
        elapsed = time.perf_counter() - t0
        if size * growth > node_limit:
            stopped = "node-limit"
            break
        if elapsed + _next_time(took, growth) > time_limit:
            stopped = "time"
            break
        t_it = time.perf_counter()
        sched = f"(run-schedule (saturate (run {ANALYSIS})) (run {MERGE}) (run {CHEAP})"
        if it < expand_iterations:
            sched += f" (run {EXPAND})"
        out = eg.run_program(*eg.parse_program(sched + ")"))
        updated = any(getattr(getattr(o, "report", None), "updated", False) for o in out)
        took.append(time.perf_counter() - t_it)
        new = _size(eg, names)
        stats.iterations = it + 1
        growth = max(1.0, new / max(size, 1))
        size = new
        stats.sizes.append(size)
        if progress:
            progress(f"e-graph iteration {it + 1}: {size} e-nodes")
        if not updated:
            stopped = "saturated"
            break
    eg.run_program(*eg.parse_program(f"(run-schedule (saturate (run {ANALYSIS})))"))
    stats.enodes = size
    stats.stopped = stopped
    ser = json.loads(eg.serialize([]).to_json())
    sat = read(ser, enc, cost, names, pair_cost, max_pairs)
    stats.seconds = time.perf_counter() - t0
    stats.unpriced = sat.stats.unpriced
    sat.stats = stats
    return sat


def _vec(nodes: dict[str, Any], nid: str) -> tuple[int, ...]:
    n = nodes[nid]
    if n["op"] == "vec-empty":
        return ()
    if n["op"] != "vec-of":
        raise GraphOptError(f"e-graph vector node {nid} is {n['op']}", where="egraph read")
    return tuple(int(nodes[c]["op"]) for c in n["children"])


def read(ser: dict[str, Any], enc: Encoded, cost: Callable[[Node], float],
         ctor_names: set[str], pair_cost: Callable[[Node, Node], float] | None = None,
         max_pairs: int = 0) -> Saturated:
    """The serialized e-graph as a view: term e-nodes by class, types, ``made`` and
    ``is_const`` rows; each e-node costed alone by ``cost`` over placeholder inputs of its
    children's types (0 for leaves, outputs, the root, and concat / pad of constants).
    ``pair_cost(producer, consumer)``: the time of the two as one piece (the producer read
    only by the consumer); with it the view's ``savings`` hold what fusing each
    (consumer, producer) pair of op e-nodes saves, for at most ``max_pairs`` pairs."""
    nodes: dict[str, Any] = ser["nodes"]
    types_shape: dict[str, tuple[int, ...]] = {}
    types_dtype: dict[str, str] = {}
    made: dict[str, set[tuple[str, str]]] = {}
    const: set[str] = set()
    terms_by_class: dict[str, list[tuple[str, Term, tuple[str, ...]]]] = {}
    root_class = ""
    for nid, n in nodes.items():
        op = n["op"]
        if op in ("shape", "dtype", "made", "made_n", "is_const"):
            cls = nodes[n["children"][0]]["eclass"]
            if op == "shape":
                types_shape[cls] = _vec(nodes, nid_of_class(nodes, n["eclass"]))
            elif op == "dtype":
                types_dtype[cls] = nodes[nid_of_class(nodes, n["eclass"])]["op"].strip('"')
            elif op == "is_const":
                const.add(cls)
            else:
                rule, _, made_ctor = nodes[n["children"][1]]["op"].strip('"').partition("|")
                made.setdefault(cls, set()).add((rule, made_ctor))
            continue
        if op not in ctor_names:
            continue
        ch = n["children"]
        if op == "Leaf":
            t = Term("leaf", index=int(nodes[ch[0]]["op"]))
            kids: tuple[str, ...] = ()
        elif op == "Out":
            t = Term("out", index=int(nodes[ch[1]]["op"]))
            kids = (nodes[ch[0]]["eclass"],)
        elif op.startswith("Root"):
            t = Term("root")
            kids = tuple(nodes[c]["eclass"] for c in ch)
            root_class = n["eclass"]
        else:
            base = op.rsplit("_", 1)[0]
            from ...ops.registry import get_op

            nd = len(get_op(base).dim_attrs)
            t = Term("op", base, nodes[ch[0]]["op"], tuple(_vec(nodes, c)
                                                          for c in ch[1:1 + nd]))
            kids = tuple(nodes[c]["eclass"] for c in ch[1 + nd:])
        terms_by_class.setdefault(n["eclass"], []).append((op, t, kids))
    if not root_class:
        raise GraphOptError("the serialized e-graph has no root", where="egraph read")
    types = {c: (s, types_dtype.get(c, "")) for c, s in types_shape.items()}
    classes: dict[str, list[ENode]] = {}
    terms: dict[NodeRef, Term] = {}
    priced: dict[tuple, float] = {}
    unpriced = 0
    for cls, items in terms_by_class.items():
        lst: list[ENode] = []
        for label, t, kids in items:
            c = 0.0
            if t.kind == "op" and not (cls in const and t.op in ("concat", "pad")):
                c = _price(t, kids, types, enc, cost, priced)
            if c == float("inf"):  # never chosen: left out of the view
                unpriced += 1
                continue
            terms[(cls, len(lst))] = t
            lst.append(ENode(label, kids, c))
        classes[cls] = lst
    view = EGraphView(classes, [root_class])
    if pair_cost is not None:
        view.savings = _savings(classes, terms, types, enc, cost, pair_cost, max_pairs)
    return Saturated(view, terms, types, made, Stats(unpriced=unpriced),
                     _originals(ser, enc, classes))


def _originals(ser: dict[str, Any], enc: Encoded, classes: dict[str, list[ENode]]
               ) -> set[NodeRef]:
    """The e-nodes of the input graph, found by their globals' classes (``let`` in the class
    data) and their children's."""
    cls_of = {d["let"]: c for c, d in ser.get("class_data", {}).items() if "let" in d}
    out: set[NodeRef] = set()
    for name, label, kids in enc.originals:
        c = cls_of.get(name)
        if c is None or any(k not in cls_of for k in kids):
            continue
        want = tuple(cls_of[k] for k in kids)
        for i, n in enumerate(classes.get(c, [])):
            if n.op == label and (label == "Leaf" or n.children == want):
                out.add((c, i))
    return out


def nid_of_class(nodes: dict[str, Any], eclass: str) -> str:
    """The node id of a primitive class (its one node: ``primitive-<class>``)."""
    return "primitive-" + eclass


def _price(t: Term, kids: tuple[str, ...], types: dict[str, tuple[tuple[int, ...], str]],
           enc: Encoded, cost: Callable[[Node], float], priced: dict[tuple, float]) -> float:
    """The cost of one op e-node alone, by (op, attrs, input types); inf when its inputs'
    types are unknown or the op refuses them (the e-node is then never chosen)."""
    ins = []
    for k in kids:
        if k not in types or not types[k][1]:
            return float("inf")
        shape, dt = types[k]
        ins.append(TensorType(enc.symbols.shape(shape), DType(dt)))
    key = (t.op, t.literal, t.dims, tuple(ins))
    if key in priced:
        return priced[key]
    try:
        node = build(t, [input_node(f"_x{j}", ty).out for j, ty in enumerate(ins)], enc)
        c = cost(node)
    except GraphOptError:
        c = float("inf")
    priced[key] = c
    return c


def build(t: Term, inputs: list[Value], enc: Encoded) -> Node:
    """The graphopt node of an op term over ``inputs`` (dim attrs mapped back to dims)."""
    from ...ops.registry import get_op

    attrs = plain_attrs(t.literal)
    dims = {a: enc.symbols.shape(v) for a, v in zip(get_op(t.op).dim_attrs, t.dims)}
    if dims:
        attrs = attrs.replace(**dims)
    return Node.build(t.op, inputs, attrs)


def _savings(classes: dict[str, list[ENode]], terms: dict[NodeRef, Term],
             types: dict[str, tuple[tuple[int, ...], str]], enc: Encoded,
             cost: Callable[[Node], float], pair_cost: Callable[[Node, Node], float],
             max_pairs: int) -> dict[tuple[NodeRef, NodeRef], float]:
    """(consumer, producer) -> seconds saved when both are chosen: cost of each alone less
    the pair's (``pair_cost``), where positive; pairs priced by (ops, attrs, types) once."""
    out: dict[tuple[NodeRef, NodeRef], float] = {}
    memo: dict[tuple, float] = {}
    pairs = 0
    for cc, nodes in classes.items():
        for ci, cn in enumerate(nodes):
            tc = terms[(cc, ci)]
            if tc.kind != "op" or cn.cost <= 0:
                continue
            for pos, pc in enumerate(cn.children):
                for pi, pn in enumerate(classes.get(pc, [])):
                    tp = terms[(pc, pi)]
                    if tp.kind != "op" or pn.cost <= 0:
                        continue
                    pairs += 1
                    if pairs > max_pairs:
                        return out
                    key = (tc.op, tc.literal, tc.dims, tp.op, tp.literal, tp.dims, pos,
                           tuple(types.get(k) for k in cn.children),
                           tuple(types.get(k) for k in pn.children))
                    if key not in memo:
                        memo[key] = _pair_saving(tc, cn, tp, pn, pos, types, enc, pair_cost)
                    if memo[key] > 0:
                        out[((cc, ci), (pc, pi))] = memo[key]
    return out


def _pair_saving(tc: Term, cn: ENode, tp: Term, pn: ENode, pos: int,
                 types: dict[str, tuple[tuple[int, ...], str]], enc: Encoded,
                 pair_cost: Callable[[Node, Node], float]) -> float:
    def placeholders(kids: tuple[str, ...], tag: str) -> list[Value] | None:
        out = []
        for j, k in enumerate(kids):
            if k not in types or not types[k][1]:
                return None
            shape, dt = types[k]
            out.append(input_node(f"_{tag}{j}", TensorType(enc.symbols.shape(shape),
                                                          DType(dt))).out)
        return out

    pins, cins = placeholders(pn.children, "p"), placeholders(cn.children, "c")
    if pins is None or cins is None:
        return 0.0
    try:
        p = build(tp, pins, enc)
        if len(p.out_types) != 1:
            return 0.0
        cins = [p.out if j == pos else v for j, v in enumerate(cins)]
        c = build(tc, cins, enc)
        return cn.cost + pn.cost - pair_cost(p, c)
    except GraphOptError:
        return 0.0
