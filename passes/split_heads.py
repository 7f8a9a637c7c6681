"""Hand-written search rules: attention heads laid out by the projection that makes them.

A transformer splits each projection ``y = x @ W (+ b)`` ([B, S, H*D]) into heads with
``transpose(reshape(y, [B, S, H, D]), (0, 2, 1, 3))`` ([B, H, S, D]); after the fusion step's
QKV merge the three projections are one matmul whose output is split, each piece reshaped and
transposed. The transposes are a copy kernel of their own on every target. These rules let the
search (``graphopt.search``) move the head split into the weights, where the cost model says it
pays:

* ``heads_through_split`` (two and three pieces): the pieces of ``split(y)`` along the last
  axis, each split into heads of one size D, -> the heads of ``y`` split along the head axis
  (``split(transpose(reshape(y)), axis=1)``: a view on every target whose splits are views);
* ``heads_of_matmul`` (and ``_bias``, each also through one more reshape, as GPT-2's 2-D Gemm
  is written): ``transpose(reshape(x @ W (+ b)))`` -> ``reshape(x, [B, 1, S, K]) @ W'``
  (+ ``b'``), a batched matmul over a constant ``W'`` = ``transpose(reshape(W, [K, H, D]))``
  ([H, K, D]) and ``b'`` = ``reshape(b, [H, 1, D])``, which writes the heads directly; the
  weight reshapes fold after the search;
* ``heads_of_split{2,3}_matmul...``: both at once (the split pieces of a projection -> the
  batched matmul split along the head axis), so that the search reaches the cheaper graph in one
  step rather than over a plateau of equal-cost graphs;
* ``mean_before_repeat`` (and ``_unreshaped``): ``expand(reshape(reduce_mean(x)))`` where the
  reshape only inserts unit dims and the expand repeats none of the reduced axes ->
  ``reduce_mean(expand(reshape(x)))``: the mean taken after the repeat (GQA's kv heads repeated
  for the query heads of a group, as the attention fusion's fully-masked-row fallback writes it),
  so the repeat joins the kernel that makes x instead of being a kernel of its own.

Every rule is exact: each output element is the same dot product (or the same element moved).
The rules belong to the search (``pass_name="search"``); ``SplitHeads`` applies them all once,
wherever they match (no cost model), so that their text-IR statements
(``rules/split_heads.rules``) replay through ``pass_by_name("split_heads")``.
"""
from __future__ import annotations

from typing import Any, Callable

from graphopt.ir.node import Value, op as build, op_multi
from graphopt.passes.merge_parallel import _shape
from graphopt.ir.types import dim_product
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import Builder, Check, Rule, rule

PASS = "search"
HEADS_PERM = (0, 2, 1, 3)  # [B, S, H, D] -> [B, H, S, D]


def _static(s: tuple[Any, ...] | None) -> bool:
    return s is not None and all(isinstance(d, int) for d in s)


def _heads_shape(m: Match, y: Value, shape: Any) -> "tuple[Any, Any, int, int] | MatchFail":
    """[B, S, H, D] of a reshape of ``y`` into heads: H and D static, H * D the last dim of
    ``y`` and B * S the product of the others (the rows of ``y`` in order; B and S may be
    symbolic)."""
    sy = _shape(y)
    if not sy or not isinstance(sy[-1], int):
        return m.fail("unknown shape or symbolic last dim", y)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return m.fail(f"reshape {list(shape)} is not [B, S, H, D] with static H, D", y)
    b, s, h, d = shape
    if h * d != sy[-1] or dim_product([b, s]) != dim_product(list(sy[:-1])):
        return m.fail(f"reshape {list(shape)} does not split the last dim of {list(sy)} into "
                      f"heads", y)
    return b, s, h, d


# ---- heads of a projection (or of its split pieces) --------------------------------------------

def _heads(t: Any, i: int) -> Any:
    return op.transpose(op.reshape(t, shape=attr(f"s{i}")), perm=HEADS_PERM)


def _lhs(pieces: int, proj: str) -> Callable[..., Any]:
    """The pattern: a value (``proj`` "") or a projection ``x @ w`` ("mm", "mm_bias": ``+ b``;
    suffix "_r": reshaped once more), split into heads whole (``pieces`` 0) or as the pieces of
    a split along its last axis."""
    def roots(y: Any) -> Any:
        if pieces == 0:
            return _heads(y, 0)
        s = op.split(y, axis=attr("a"), sizes=attr("sz"))
        return tuple(_heads(s.out(i), i) for i in range(pieces))

    def y_of(x: Any, w: Any, b: Any = None) -> Any:
        y = op.matmul(x, w)
        if b is not None:
            y = op.add(y, b)
        return op.reshape(y, shape=attr("r")) if proj.endswith("_r") else y

    if not proj:
        return lambda y: roots(y)
    if "bias" in proj:
        return lambda x, w, b: roots(y_of(x, w, b))
    return lambda x, w: roots(y_of(x, w))


def _split_heads_of(m: Match) -> tuple[Value, list[Value]]:
    """The value split into heads and the value each root's heads reshape reads (read in the
    graph the match was found in: checks only, a builder sees the match rebased)."""
    inner = [r.node.inputs[0].node.inputs[0] for r in m.roots]
    if "sz" not in m.attrs:
        return inner[0], inner
    return inner[0].node.inputs[0], inner


def _check(m: Match) -> "MatchFail | None":
    y, inner = _split_heads_of(m)
    sy = _shape(y)
    if not sy or not isinstance(sy[-1], int):
        return m.fail("unknown shape or symbolic last dim", y)
    if "sz" in m.attrs:
        if len(m.attrs["sz"]) != len(m.roots):
            return m.fail(f"split into {len(m.attrs['sz'])} pieces, not {len(m.roots)}",
                          y.node)
        if m.attrs["a"] != len(sy) - 1:
            return m.fail("split is not along the last axis", inner[0].node)
    heads = []
    for i, v in enumerate(inner):
        h = _heads_shape(m, v, m.attrs[f"s{i}"])
        if isinstance(h, MatchFail):
            return h
        heads.append(h)
    if len({(h[0], h[1], h[3]) for h in heads}) != 1:
        return m.fail("pieces differ in head size", inner[0].node)
    if "x" not in m.values:
        return None
    x, w = m["x"], m["w"]
    sx, sw = _shape(x), _shape(w)
    if not sx or not _static(sw):
        return m.fail("unknown input shape or symbolic weight shape", w)
    assert sw is not None
    if len(sw) != 2 or len(sx) < 2:
        return m.fail("weight is not a matrix", w)
    b, s = heads[0][:2]
    if sw[1] != sy[-1] or dim_product(list(sx[:-1])) != dim_product([b, s]):
        return m.fail("the heads are not the matmul's rows and columns", w)
    if "b" in m.values and _shape(m["b"]) != (sw[1],):
        return m.fail(f"bias {_shape(m['b'])} is not a vector over the output columns",
                      m["b"])
    return None


def _rhs(m: Match) -> list[Value]:
    heads = [m.attrs[f"s{i}"] for i in range(len(m.roots))]
    b, s, _, d = heads[0]
    hs = tuple(int(h[2]) for h in heads)
    h = sum(hs)
    if "x" in m.values:
        w = m["w"]
        k = int((_shape(w) or ())[0])
        wh = build("transpose", build("reshape", w, shape=(k, h, d)), perm=(1, 0, 2))
        y = build("matmul", build("reshape", m["x"], shape=(b, 1, s, k)), wh)
        if "b" in m.values:
            y = build("add", y, build("reshape", m["b"], shape=(h, 1, d)))
    else:
        y = build("transpose", build("reshape", m["y"], shape=(b, s, h, d)), perm=HEADS_PERM)
    if "sz" not in m.attrs:
        return [y]
    return list(op_multi("split", y, axis=1, sizes=hs))


# ---- the mean of repeated kv heads ---------------------------------------------------------------

def _mean_lhs(reshaped: bool) -> Callable[..., Any]:
    def lhs(x: Any) -> Any:
        y = op.reduce_mean(x, axes=attr("ax"), keepdims=True)
        if reshaped:
            y = op.reshape(y, shape=attr("r"))
        return op.expand(y, shape=attr("e"))

    return lhs


def _unit_embedding(src: tuple[int, ...], dst: tuple[int, ...], unit: frozenset[int],
                    ok: Callable[[int], bool]) -> list[int] | None:
    """Positions in ``dst`` of ``src``'s dims when ``dst`` is ``src`` with unit dims inserted,
    the dims of ``unit`` placed where ``ok`` holds (None: no such placement)."""
    def place(i: int, j: int) -> list[int] | None:
        if i == len(src):
            return [] if all(d == 1 for d in dst[j:]) else None
        for k in range(j, len(dst)):
            if dst[k] == src[i] and (i not in unit or ok(k)):
                rest = place(i + 1, k + 1)
                if rest is not None:
                    return [k, *rest]
            if dst[k] != 1:
                return None
        return None

    return place(0, 0)


def _mean_plan(m: Match) -> "tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | MatchFail":
    """(x reshaped, expanded, axes to reduce) of the mean taken after the repeat."""
    x = m["x"]
    sx = _shape(x)
    mean = m.roots[0].node.inputs[0]
    if "r" in m.attrs:
        mean = mean.node.inputs[0]
    sm, e = _shape(mean), tuple(m.attrs["e"])
    if not _static(sx) or not _static(sm) or not _static(e):
        return m.fail("symbolic or unknown shapes", x)
    assert sx is not None and sm is not None
    ax = {a % len(sx) for a in m.attrs["ax"]}
    r = tuple(m.attrs["r"]) if "r" in m.attrs else sm
    pos = _unit_embedding(sm, r, frozenset(ax), lambda k: e[k] == 1)
    if pos is None or len(e) != len(r):
        return m.fail("the repeat broadcasts a reduced axis or the reshape does more than "
                      "insert unit dims", mean.node)
    xr, xe = list(r), list(e)
    for a in ax:
        xr[pos[a]] = xe[pos[a]] = sx[a]
    return tuple(xr), tuple(xe), tuple(sorted(pos[a] for a in ax))


def _mean_check(m: Match) -> "MatchFail | None":
    got = _mean_plan(m)
    return got if isinstance(got, MatchFail) else None


def _mean_rhs(m: Match) -> Value:
    plan = _mean_plan(m)
    assert not isinstance(plan, MatchFail)
    xr, xe, axes = plan
    return build("reduce_mean", build("expand", build("reshape", m["x"], shape=xr), shape=xe),
                 axes=axes, keepdims=True)


def _search(name: str, lhs: Callable[..., Any], rhs: Builder, check: Check) -> Rule:
    return rule(name, lhs, rhs, check, source=__name__, kind="search", pass_name=PASS)


# projection spellings, the bare value last (a sweep gives a place to the first rule matching it)
_PROJ = {"mm": "matmul", "mm_bias": "matmul_bias", "mm_r": "matmul_reshaped",
         "mm_bias_r": "matmul_bias_reshaped", "": "value"}


def _heads_rule(pieces: int, proj: str) -> Rule:
    name = "heads_of_" + _PROJ[proj] if pieces == 0 else \
        f"heads_through_split{pieces}" if not proj else f"heads_of_split{pieces}_{_PROJ[proj]}"
    return _search(name, _lhs(pieces, proj), _rhs, _check)


RULES: list[Rule] = [
    *[_heads_rule(n, p) for n in (2, 3) for p in _PROJ],
    *[_heads_rule(0, p) for p in _PROJ if p],
    _search("mean_before_repeat", _mean_lhs(True), _mean_rhs, _mean_check),
    _search("mean_before_repeat_unreshaped", _mean_lhs(False), _mean_rhs, _mean_check),
]


# rules whose replacement is a batched matmul over per-head weights
BATCHED = frozenset(r.name for r in RULES if r.name.startswith("heads_of_"))


def rules_for(target: str | None) -> list[Rule]:
    """The rules the search uses on ``target`` (None: all). On a CPU target (ONNX Runtime's CPU
    provider) the batched-matmul forms are left out: its MatMul runs ``[1, 1, S, K] @ [H, K,
    D]`` 1.1x (12 heads, 768 wide, sequence 128) to 6.5-9x (36 heads: merged Q/K/V) slower
    than the 2-D GEMM with the transposes it replaces (measured, ONNX Runtime 1.32, this CPU;
    it prepacks constant 2-D weights only), which the analytic model does not price. The
    head split after the QKV split (``heads_through_split*``: 0.82-0.87x) and the mean before
    the repeat stay."""
    from graphopt.cost.devices import get_device

    if target is None or get_device(target).kind != "cpu":
        return list(RULES)
    return [r for r in RULES if r.name not in BATCHED]


def left_out(target: str | None) -> dict[str, str]:
    """The rules of this module the search leaves out on ``target``, each with the reason (for
    the search report)."""
    if target is None or len(rules_for(target)) == len(RULES):
        return {}
    return {n: "ONNX Runtime's CPU MatMul runs the batched per-head form slower (measured)"
            for n in sorted(BATCHED)}


class SplitHeads(RewritePass):
    """Every search rule of this module applied once wherever it matches, in one sweep (a place
    taken by an earlier rule is left to it): the rules' replay pass. The search itself applies
    them only where the cost model says the result is faster."""

    name = "split_heads"
    rules = tuple(RULES)
