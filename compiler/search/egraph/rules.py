"""The search's rules as egglog rewrites over the encoding of ``encode.py``.

* Generated rules (``compiler/subst/rules``, as ``search/ruleset.py`` names them: ``name`` for
  left-to-right, ``name~`` for right-to-left) are translated mechanically. Every rule input gets
  rank, dim and dtype conditions (a rule stores its sizes as dim variables, ``rewrite/dims.py``),
  so an ill-typed right side is never unioned; every size the right side needs is computed in
  the query (an i64 overflow there is a non-match, in an action it would abort the run).
* A generated rule with several roots (a merge of parallel ops, or its inverse) matches only
  roots that are values of the input graph (they have an ``ord``) and distinct: unrestricted,
  it pairs every new node with every other and the e-graph explodes (Tensat limits its
  multi-pattern rules the same way).
* The hand-written merge rules of ``passes/merge_parallel.py`` have egglog forms here
  (``HANDWRITTEN``), with an order condition so a pair merges once and three-way merges form
  from the merged concat: each value has an interval of input-graph positions
  (``ord``..``ord_hi``; a concat of weights spans both), and only disjoint intervals in order
  merge. Other hand-written rules (Python checks, no egglog form: ``NO_FORM``) are applied to
  the input graph in Python by the search (``search._seeds``).
* ``is_const``: leaves that are constants, and concat / pad of constants (folded after search).

Every rule records what it made: ``(made class "rule|constructor")`` on its first root. A rule
that cannot be translated is kept with its reason (``Translation.skipped``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ...ir.graph import Graph
from ...ir.node import Node, Value
from ...ir.types import TensorType
from ...rewrite.dims import DimExpr
from ..ruleset import Entry
from .encode import SYM_BASE, attr_literal, ctor, multi

CHEAP, EXPAND, MERGE, ANALYSIS = "cheap", "expand", "merge", "analysis"


@dataclass(frozen=True)
class EggRule:
    """One rewrite in egglog text; ``ctors``: the (op, arity, multi) constructors it uses."""

    name: str
    text: str
    ruleset: str
    ctors: frozenset[tuple[str, int, bool]]


@dataclass
class Translation:
    """Rules translated, and the ones that were not with their reasons."""

    rules: list[EggRule] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class Untranslatable(Exception):
    """A rule direction that has no egglog form here (the message says why)."""


# ---- generated rules ----------------------------------------------------------------------------

class _Dims:
    """Dim variables of a rule and the query conditions that bind them."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}  # dim var -> egglog variable
        self.query: list[str] = []
        self.fresh = 0

    def var(self, prefix: str) -> str:
        self.fresh += 1
        return f"?{prefix}{self.fresh}"

    def expr(self, e: DimExpr) -> str:
        """An i64 expression of bound variables (raises KeyError when one is unbound)."""
        parts = [self.env[v] for v in e.vars]
        if e.coef != 1 or not parts:
            parts.insert(0, str(e.coef))
        out = parts[0]
        for p in parts[1:]:
            out = f"(* {out} {p})"
        return out

    def bind(self, items: list[tuple[str, DimExpr]]) -> None:
        """Conditions making each (i64 expression, DimExpr) pair equal, binding variables as
        they become determined (one unbound variable: by exact division)."""
        todo = list(items)
        while todo:
            left = []
            for x, e in todo:
                unbound = [v for v in e.vars if v not in self.env]
                if not unbound:
                    self.query.append(f"(= {x} {self.expr(e)})")
                elif len(unbound) == 1 and e.vars.count(unbound[0]) == 1:
                    v = unbound[0]
                    known = DimExpr(e.coef, tuple(u for u in e.vars if u != v))
                    name = self.var("d")
                    if known.coef == 1 and not known.vars:
                        self.query.append(f"(= {name} {x})")
                    else:
                        k = self.expr(known)
                        self.query.append(f"(> {k} 0)")
                        self.query.append(f"(= 0 (% {x} {k}))")
                        self.query.append(f"(= {name} (/ {x} {k}))")
                    self.env[v] = name
                else:
                    left.append((x, e))
            if len(left) == len(todo):
                raise Untranslatable("a dim is a product of unbound dim variables")
            todo = left

    def computed(self, e: DimExpr) -> str:
        """A variable bound in the query to ``e`` (so actions never compute)."""
        try:
            x = self.expr(e)
        except KeyError as ex:
            raise Untranslatable(f"rhs dim {e} uses a dim variable the lhs does not bind") from ex
        if x.startswith("?") or x.lstrip("-").isdigit():
            return x
        name = self.var("e")
        self.query.append(f"(= {name} {x})")
        return name


def _stored_dims(xs: Iterable[object]) -> list[DimExpr]:
    out = []
    for d in xs:
        if not isinstance(d, int):
            raise Untranslatable("symbolic dim in a stored rule")
        out.append(DimExpr.of(d))
    return out


def _check_node(n: Node) -> None:
    if n.op == "constant":
        raise Untranslatable("rule holds a constant")
    for t in n.out_types:
        if not isinstance(t, TensorType) or t.shape is None:
            raise Untranslatable(f"{n.op} of unknown shape")


def _term(n: Node, ins: list[str], dims: list[str]) -> str:
    return f"({ctor(n.op, len(ins), multi(n))} {attr_literal(n.op, n.attrs)} " \
           f"{' '.join(dims + ins)})"


def translate(src: Graph, dst: Graph, name: str, float_only: bool = False) -> EggRule:
    """The egglog rewrite ``src -> dst`` of a generated rule (inputs matched by name)."""
    from ...ops.registry import get_op

    if len(src.outputs) != len(dst.outputs):
        raise Untranslatable("sides have different output counts")
    for n in list(src.nodes) + list(dst.nodes):
        _check_node(n)
    if any(v.node.op == "input" for v in src.outputs):
        raise Untranslatable("an lhs output is a bare input (it would match anything)")
    names = dict(zip(src.input_names, range(len(src.inputs))))
    if set(dst.input_names) - set(names):
        raise Untranslatable("rhs reads an input the lhs does not bind")
    dims = _Dims()
    invar = {id(n): f"?i{k}" for k, n in enumerate(src.inputs)}
    ctors: set[tuple[str, int, bool]] = set()
    dim_attr_items: list[tuple[str, DimExpr]] = []
    memo: dict[int, str] = {}

    def pat(v: Value) -> str:
        n = v.node
        if n.op == "input":
            return invar[id(n)]
        if id(n) not in memo:
            ins = [pat(u) for u in n.inputs]
            dvars = []
            for a in get_op(n.op).dim_attrs:
                x = dims.var("v")
                dvars.append(x)
                stored = _stored_dims(n.attrs[a])
                dims.query.append(f"(= {len(stored)} (vec-length {x}))")
                dim_attr_items.extend((f"(vec-get {x} {j})", e) for j, e in enumerate(stored))
            memo[id(n)] = _term(n, ins, dvars)
            ctors.add((n.op, len(ins), multi(n)))
        t = memo[id(n)]
        return f"(Out {t} {v.index})" if multi(n) else t

    roots = [f"(= ?r{j} {pat(v)})" for j, v in enumerate(src.outputs)]
    if len(roots) > 1:  # several roots: input-graph values only, distinct (see module doc)
        roots += [f"(= ?or{j} (ord ?r{j}))" for j in range(len(roots))]
        roots += [f"(!= ?r{j} ?r{k})" for j in range(len(src.outputs))
                  for k in range(j + 1, len(src.outputs))]
    in_dtypes = {t.dtype for t in src.input_types if isinstance(t, TensorType)}
    if len(in_dtypes) != 1:
        raise Untranslatable("inputs of different dtypes")
    (dtype,) = in_dtypes
    pre = ["(= ?dt (dtype ?i0))"] + [f"(= ?dt (dtype ?i{k}))" for k in range(1, len(src.inputs))]
    if float_only:
        pre.append("(is_float ?dt)")
    items: list[tuple[str, DimExpr]] = []
    for k, t in enumerate(src.input_types):
        assert isinstance(t, TensorType) and t.shape is not None
        pre.append(f"(= ?s{k} (shape ?i{k}))")
        pre.append(f"(= {len(t.shape)} (vec-length ?s{k}))")
        items.extend((f"(vec-get ?s{k} {j})", e) for j, e in enumerate(_stored_dims(t.shape)))
    dims.bind(items + dim_attr_items)

    # right side: every node let-bound with its types set; sizes computed in the query
    acts: list[str] = []
    local: dict[int, str] = {id(n): f"?i{names[nm]}" for n, nm in zip(dst.inputs,
                                                                     dst.input_names)}
    for k, n in enumerate(dst.nodes):
        if n.op == "input":
            continue
        if any(t.dtype != dtype for t in n.out_types if isinstance(t, TensorType)):
            raise Untranslatable("rhs changes the dtype")
        ins = [_value(local, u) for u in n.inputs]
        dvecs = [f"(vec-of {' '.join(dims.computed(e) for e in _stored_dims(n.attrs[a]))})"
                 for a in get_op(n.op).dim_attrs]
        acts.append(f"(let ?n{k} {_term(n, ins, dvecs)})")
        ctors.add((n.op, len(ins), multi(n)))
        local[id(n)] = f"?n{k}"
        for i, t in enumerate(n.out_types):
            assert isinstance(t, TensorType) and t.shape is not None
            shp = " ".join(dims.computed(e) for e in _stored_dims(t.shape))
            v = _value(local, Value(n, i))
            acts.append(f"(set (shape {v}) (vec-of {shp}))")
            acts.append(f"(set (dtype {v}) ?dt)")
    for j, v in enumerate(dst.outputs):
        acts.append(f"(union ?r{j} {_value(local, v)})")
    first = dst.outputs[0].node
    if first.op != "input":
        made = "Out" if multi(first) else ctor(first.op, len(first.inputs), False)
        acts.append(f'(made ?r0 "{name}|{made}")')
    grows = len(src.outputs) > 1 or sum(1 for n in dst.nodes if n.op != "input") > \
        sum(1 for n in src.nodes if n.op != "input")
    text = (f"(rule ({' '.join(roots + pre + dims.query)})\n  ({' '.join(acts)})\n"
            f"  :ruleset {EXPAND if grows else CHEAP} :name \"{name}\")")
    return EggRule(name, text, EXPAND if grows else CHEAP, frozenset(ctors))


def _value(local: dict[int, str], v: Value) -> str:
    x = local[id(v.node)]
    return f"(Out {x} {v.index})" if v.node.op != "input" and multi(v.node) else x


# ---- hand-written rules --------------------------------------------------------------------------

_SYM = str(SYM_BASE)  # a dim below it is static
MAX_RANK = 8


def _lit(op: str, rank: int, **attrs: object) -> str:
    """The attrs literal of an ``op`` node as ``Node.build`` normalizes it (a node over a
    rank-``rank`` f32 placeholder)."""
    from ...ir.node import input_node
    from ...ir.types import DType

    x = input_node(f"_rank{rank}", TensorType((2,) * rank, DType.f32)).out
    n = Node.build(op, (x, x) if op == "concat" else (x,), attrs)
    return attr_literal(op, n.attrs)


def facts(enc_nodes: Iterable[Node]) -> str:
    """Facts the hand-written rules read, for the nodes of an encoded graph: the concat /
    split literal of each rank's last axis (``cat_last`` / ``split_last``), convs without groups
    (``group1``) and the attrs of a 1x1 conv enlarged to 3x3 (``enlarged``)."""
    out = []
    for r in range(1, MAX_RANK + 1):
        out.append(f"(set (cat_last {r}) {_lit('concat', r, axis=r - 1)})")
        out.append(f"(set (split_last {r}) {_lit('split', r, axis=r - 1, sizes=(1, 1))})")
    seen: set[str] = set()
    for n in enc_nodes:
        if n.op != "conv":
            continue
        lit = attr_literal("conv", n.attrs)
        if lit in seen:
            continue
        seen.add(lit)
        if n.attrs.get("group") == 1:
            out.append(f"(group1 {lit})")
        pads, dil = n.attrs.get("pads"), n.attrs.get("dilations")
        if pads is not None and dil is not None and len(dil) == 2 and not any(pads) and \
                tuple(dil) == (1, 1):
            big = attr_literal("conv", n.attrs.replace(pads=(1, 1, 1, 1)))
            out.append(f"(set (enlarged {lit}) {big})")
    return "\n".join(out) + "\n"


FACT_DECLS = """(function cat_last (i64) String :merge old)
(function split_last (i64) String :merge old)
(relation group1 (String))
(function enlarged (String) String :merge old)
"""

_MM, _CAT2, _SPL, _ADD = (ctor("matmul", 2, False), ctor("concat", 2, False),
                          ctor("split", 1, True), ctor("add", 2, False))
_CAT_SPLIT = [("concat", 2, False), ("split", 1, True)]


def _merge_matmul_shared_lhs(name: str) -> tuple[str, list[tuple[str, int, bool]]]:
    """x@w1, x@w2 -> split(x @ concat(w1, w2)) along the last axis."""
    return f"""(rule ((= ?m1 ({_MM} "" ?x ?w1)) (= ?m2 ({_MM} "" ?x ?w2))
   (= ?o1 (ord ?w1)) (= ?h1 (ord_hi ?w1)) (= ?o2 (ord ?w2)) (= ?h2 (ord_hi ?w2)) (< ?h1 ?o2)
   (= ?s1 (shape ?w1)) (= ?s2 (shape ?w2)) (= ?r (vec-length ?s1)) (= ?r (vec-length ?s2))
   (>= ?r 2) (= ?l (- ?r 1)) (= ?p (vec-set ?s1 ?l 0)) (= ?p (vec-set ?s2 ?l 0))
   (= ?n1 (vec-get ?s1 ?l)) (= ?n2 (vec-get ?s2 ?l)) (< ?n1 {_SYM}) (< ?n2 {_SYM})
   (= ?n (+ ?n1 ?n2)) (= ?sm (shape ?m1)) (= ?rm (vec-length ?sm)) (= ?lm (- ?rm 1))
   (= ?dt (dtype ?m1)) (= ?dw (dtype ?w1)) (= ?dw (dtype ?w2))
   (= ?cat (cat_last ?r)) (= ?spl (split_last ?rm)))
  ((let ?c ({_CAT2} ?cat ?w1 ?w2)) (set (shape ?c) (vec-set ?s1 ?l ?n))
   (set (dtype ?c) ?dw) (set (ord ?c) ?o1) (set (ord_hi ?c) ?h2)
   (let ?m ({_MM} "" ?x ?c)) (set (shape ?m) (vec-set ?sm ?lm ?n)) (set (dtype ?m) ?dt)
   (let ?s ({_SPL} ?spl (vec-of ?n1 ?n2) ?m))
   (union ?m1 (Out ?s 0)) (union ?m2 (Out ?s 1)) (made ?m1 "{name}|Out"))
  :ruleset {MERGE} :name "{name}")""", [("matmul", 2, False), *_CAT_SPLIT]


def _merge_matmul_sum(name: str) -> tuple[str, list[tuple[str, int, bool]]]:
    """x@w1 + h@w2 -> concat(x, h) @ concat(w1, w2) (no broadcasting add)."""
    axis0 = _lit("concat", 2, axis=0)
    return f"""(rule ((= ?a ({_ADD} "" ?y1 ?y2)) (= ?y1 ({_MM} "" ?x ?w1)) (= ?y2 ({_MM} "" ?h ?w2))
   (!= ?x ?h)
   (= ?s1 (shape ?w1)) (= ?s2 (shape ?w2)) (= 2 (vec-length ?s1)) (= 2 (vec-length ?s2))
   (= ?n (vec-get ?s1 1)) (= ?n (vec-get ?s2 1)) (= ?k1 (vec-get ?s1 0)) (= ?k2 (vec-get ?s2 0))
   (= ?sx (shape ?x)) (= ?sh (shape ?h)) (= ?r (vec-length ?sx)) (= ?r (vec-length ?sh))
   (>= ?r 2) (= ?l (- ?r 1)) (= ?p (vec-set ?sx ?l 0)) (= ?p (vec-set ?sh ?l 0))
   (= ?k (+ ?k1 ?k2)) (= ?sa (shape ?a)) (= ?sa (shape ?y1)) (= ?sa (shape ?y2))
   (= ?dt (dtype ?x)) (= ?dt (dtype ?h)) (= ?dw (dtype ?w1)) (= ?dw (dtype ?w2))
   (= ?cat (cat_last ?r)) (= ?da (dtype ?a)))
  ((let ?cx ({_CAT2} ?cat ?x ?h)) (set (shape ?cx) (vec-set ?sx ?l ?k)) (set (dtype ?cx) ?dt)
   (let ?cw ({_CAT2} {axis0} ?w1 ?w2)) (set (shape ?cw) (vec-of ?k ?n)) (set (dtype ?cw) ?dw)
   (let ?m ({_MM} "" ?cx ?cw)) (set (shape ?m) ?sa) (set (dtype ?m) ?da)
   (union ?a ?m) (made ?a "{name}|{_MM}"))
  :ruleset {MERGE} :name "{name}")""", [("matmul", 2, False), ("add", 2, False), *_CAT_SPLIT]


def _merge_conv(name: str, bias: bool) -> tuple[str, list[tuple[str, int, bool]]]:
    """Two convs of one input, same attrs (no groups) and kernel size -> one conv with the
    output channels of both, split on axis 1."""
    k = 3 if bias else 2
    cv = ctor("conv", k, False)
    b1, b2 = (" ?b1", " ?b2") if bias else ("", "")
    axis0 = _lit("concat", 1, axis=0)
    axis1 = _lit("split", 4, axis=1, sizes=(1, 1))
    db = " (= ?db (dtype ?b1))" if bias else ""
    cb = (f"(let ?cb ({_CAT2} {axis0} ?b1 ?b2)) (set (shape ?cb) (vec-of ?n)) "
          "(set (dtype ?cb) ?db)") if bias else ""
    return f"""(rule ((= ?c1 ({cv} ?a ?x ?w1{b1})) (= ?c2 ({cv} ?a ?x ?w2{b2})) (group1 ?a)
   (= ?o1 (ord ?w1)) (= ?h1 (ord_hi ?w1)) (= ?o2 (ord ?w2)) (= ?h2 (ord_hi ?w2)) (< ?h1 ?o2)
   (= ?s1 (shape ?w1)) (= ?s2 (shape ?w2)) (= 4 (vec-length ?s1)) (= 4 (vec-length ?s2))
   (= ?n1 (vec-get ?s1 0)) (= ?n2 (vec-get ?s2 0)) (< ?n1 {_SYM}) (< ?n2 {_SYM})
   (= ?p (vec-set ?s1 0 0)) (= ?p (vec-set ?s2 0 0)) (= ?n (+ ?n1 ?n2))
   (= ?sy (shape ?c1)) (= ?dt (dtype ?c1)) (= ?dw (dtype ?w1)) (= ?dw (dtype ?w2)){db})
  ((let ?cw ({_CAT2} {_lit("concat", 4, axis=0)} ?w1 ?w2)) (set (shape ?cw) (vec-set ?s1 0 ?n))
   (set (dtype ?cw) ?dw) (set (ord ?cw) ?o1) (set (ord_hi ?cw) ?h2) {cb}
   (let ?y ({cv} ?a ?x ?cw{" ?cb" if bias else ""})) (set (shape ?y) (vec-set ?sy 1 ?n))
   (set (dtype ?y) ?dt)
   (let ?s ({_SPL} {axis1} (vec-of ?n1 ?n2) ?y))
   (union ?c1 (Out ?s 0)) (union ?c2 (Out ?s 1)) (made ?c1 "{name}|Out"))
  :ruleset {MERGE} :name "{name}")""", [("conv", k, False), *_CAT_SPLIT]


def _enlarge(name: str, bias: bool) -> tuple[str, list[tuple[str, int, bool]]]:
    """A 1x1 conv (no padding, no dilation) as a 3x3 conv of the kernel padded with zeros."""
    k = 3 if bias else 2
    cv = ctor("conv", k, False)
    b = " ?b" if bias else ""
    pad = _lit("pad", 4, pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="constant", value=0.0)
    return f"""(rule ((= ?c ({cv} ?a ?x ?w{b})) (= ?a2 (enlarged ?a))
   (= ?sw (shape ?w)) (= 4 (vec-length ?sw)) (= 1 (vec-get ?sw 2)) (= 1 (vec-get ?sw 3))
   (= ?dw (dtype ?w)) (= ?o (ord ?w)) (= ?h (ord_hi ?w)) (= ?sc (shape ?c)) (= ?dt (dtype ?c)))
  ((let ?p ({ctor("pad", 1, False)} {pad} ?w)) (set (shape ?p) (vec-set (vec-set ?sw 2 3) 3 3))
   (set (dtype ?p) ?dw) (set (ord ?p) ?o) (set (ord_hi ?p) ?h)
   (let ?y ({cv} ?a2 ?x ?p{b})) (set (shape ?y) ?sc) (set (dtype ?y) ?dt)
   (union ?c ?y) (made ?c "{name}|{cv}"))
  :ruleset {EXPAND} :name "{name}")""", [("conv", k, False), ("pad", 1, False)]


_SPLIT2 = f"""(= ?s ({_SPL} ?sa ?sz ?y)) (= 2 (vec-length ?sz)) (= ?sy (shape ?y))"""


def _bias_after_split(name: str) -> tuple[str, list[tuple[str, int, bool]]]:
    """split(y)#0 + b0, split(y)#1 + b1 -> split(y + concat(b0, b1)) (last axis, vectors)."""
    axis0 = _lit("concat", 1, axis=0)
    return f"""(rule ({_SPLIT2} (= ?rk (vec-length ?sy)) (= ?sa (split_last ?rk))
   (= ?a0 ({_ADD} "" (Out ?s 0) ?b0)) (= ?a1 ({_ADD} "" (Out ?s 1) ?b1))
   (= ?sb0 (shape ?b0)) (= ?sb1 (shape ?b1)) (= 1 (vec-length ?sb0)) (= 1 (vec-length ?sb1))
   (= (shape ?a0) (shape (Out ?s 0))) (= (shape ?a1) (shape (Out ?s 1)))
   (= ?n0 (vec-get ?sz 0)) (= ?n1 (vec-get ?sz 1)) (= ?n0 (vec-get ?sb0 0))
   (= ?n1 (vec-get ?sb1 0)) (= ?n (+ ?n0 ?n1)) (= ?dt (dtype ?y)) (= ?db (dtype ?b0)))
  ((let ?cb ({_CAT2} {axis0} ?b0 ?b1)) (set (shape ?cb) (vec-of ?n)) (set (dtype ?cb) ?db)
   (let ?z ({_ADD} "" ?y ?cb)) (set (shape ?z) ?sy) (set (dtype ?z) ?dt)
   (let ?s2 ({_SPL} ?sa ?sz ?z))
   (union ?a0 (Out ?s2 0)) (union ?a1 (Out ?s2 1)) (made ?a0 "{name}|Out"))
  :ruleset {MERGE} :name "{name}")""", [("add", 2, False), *_CAT_SPLIT]


def _unary_through_split(name: str, op: str) -> tuple[str, list[tuple[str, int, bool]]]:
    """u(split(y)#0), u(split(y)#1) -> split(u(y))."""
    u = ctor(op, 1, False)
    return f"""(rule ({_SPLIT2} (= ?u0 ({u} ?ua (Out ?s 0))) (= ?u1 ({u} ?ua (Out ?s 1)))
   (= ?dt (dtype ?u0)))
  ((let ?z ({u} ?ua ?y)) (set (shape ?z) ?sy) (set (dtype ?z) ?dt)
   (let ?s2 ({_SPL} ?sa ?sz ?z))
   (union ?u0 (Out ?s2 0)) (union ?u1 (Out ?s2 1)) (made ?u0 "{name}|Out"))
  :ruleset {MERGE} :name "{name}")""", [(op, 1, False), ("split", 1, True)]


def _concat_of_split(name: str) -> tuple[str, list[tuple[str, int, bool]]]:
    """concat(split(y)#0, split(y)#1) on the split's axis -> y."""
    return f"""(rule ({_SPLIT2} (= ?c ({_CAT2} ?sa (Out ?s 0) (Out ?s 1))))
  ((union ?c ?y)) :ruleset {MERGE} :name "{name}")""", _CAT_SPLIT


HANDWRITTEN = {
    "merge_matmul_shared_lhs": lambda: _merge_matmul_shared_lhs("merge_matmul_shared_lhs"),
    "merge_matmul_sum": lambda: _merge_matmul_sum("merge_matmul_sum"),
    "merge_conv_shared_input": lambda: _merge_conv("merge_conv_shared_input", False),
    "merge_conv_bias_shared_input": lambda: _merge_conv("merge_conv_bias_shared_input", True),
    "enlarge_conv_kernel": lambda: _enlarge("enlarge_conv_kernel", False),
    "enlarge_conv_bias_kernel": lambda: _enlarge("enlarge_conv_bias_kernel", True),
    "merge_bias_after_split": lambda: _bias_after_split("merge_bias_after_split"),
    "concat_of_split": lambda: _concat_of_split("concat_of_split"),
    **{f"{u}_through_split": (lambda u=u: _unary_through_split(f"{u}_through_split", u))
       for u in ("relu", "sigmoid", "tanh", "gelu")},
}


def analysis_rules(ctors: Iterable[tuple[str, int, bool]]) -> str:
    """``is_const`` through concat and pad of constants (both fold after the search)."""
    out = []
    for op, k, m in sorted(set(ctors)):
        if op in ("concat", "pad") and not m:
            xs = " ".join(f"?x{i}" for i in range(k))
            conds = " ".join(f"(is_const ?x{i})" for i in range(k))
            out.append(f"(rule ((= ?c ({ctor(op, k, False)} ?a {xs})) {conds}) "
                       f"((is_const ?c)) :ruleset {ANALYSIS})")
    return "\n".join(out) + "\n"


# ---- the search's rule list ----------------------------------------------------------------------

_CACHE: dict[tuple[str, bool], "EggRule | str"] = {}


def _generated(name: str, e: Entry, reverse: bool) -> "EggRule | str":
    """The egglog form of a generated rule direction, or why it has none."""
    key = (e.text, reverse)
    if key not in _CACHE:
        from ...subst.rulefile import loads

        (r,) = loads(e.text, e.source)
        src, dst = (r.rhs, r.lhs) if reverse else (r.lhs, r.rhs)
        try:
            _CACHE[key] = translate(src, dst, name, r.float_only)
        except Untranslatable as ex:
            _CACHE[key] = str(ex)
    return _CACHE[key]


NO_FORM = "hand-written rule without an egglog form"


def _handwritten(name: str) -> "EggRule | str":
    if name not in HANDWRITTEN:
        return NO_FORM
    text, ctors = HANDWRITTEN[name]()
    rs = EXPAND if f":ruleset {EXPAND}" in text else MERGE
    return EggRule(name, text, rs, frozenset(ctors))


_ENTRIES: dict[int, dict[str, Entry]] = {}


def _entries() -> dict[str, Entry]:
    """The generated rules by name (scanned once)."""
    from ..ruleset import scan

    es = scan()
    if id(es) not in _ENTRIES:
        _ENTRIES.clear()
        _ENTRIES[id(es)] = {e.name: e for e in es}
    return _ENTRIES[id(es)]


def translate_rules(rules: Sequence[object], graph_keys: set[str],
                    max_rules: int | None = None) -> Translation:
    """The egglog forms of a search's rule list (PatternRules: generated directions by name,
    ``name~`` reversed; hand-written rules by their egglog forms here). Generated directions
    are kept only when they can ever match (``select.live`` over the graph's node keys
    ``graph_keys``); ``max_rules``: at most this many of those (fewest right-side nodes
    first), the rest listed as skipped. Only kept directions are parsed and translated."""
    from .select import entry_keys, live

    out = Translation()
    entries = _entries()
    cands: list[tuple[str, Entry, bool]] = []
    wild: set[str] = set()
    for r in rules:
        name = getattr(r, "name", str(r))
        if getattr(r, "kind", "") != "generated":
            t = _handwritten(name)
            if isinstance(t, str):
                out.skipped[name] = t
            else:
                out.rules.append(t)
                wild.update(op for op, _, _ in t.ctors)
            continue
        base, rev = (name[:-1], True) if name.endswith("~") else (name, False)
        if base not in entries:
            out.skipped[name] = f"no generated rule {base} in the rule files"
            continue
        cands.append((name, entries[base], rev))
    kept, dead = live(cands, graph_keys, wild)
    for name in dead:
        out.skipped[name] = "never matches: an lhs node (op, attrs) the graph cannot have"
    if max_rules is not None and len(kept) > max_rules:
        kept.sort(key=lambda c: (entry_keys(c[1], c[2])[2], c[0]))
        for c in kept[max_rules:]:
            out.skipped[c[0]] = f"over the rule cap ({max_rules})"
        kept = kept[:max_rules]
    for name, e, rev in kept:
        t = _generated(name, e, rev)
        if isinstance(t, str):
            out.skipped[name] = t
        else:
            out.rules.append(t)
    return out
