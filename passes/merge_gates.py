"""Search rules: gate projections of a recurrent cell with the same activation become one matmul.

A gate of an RNN cell is ``act(x @ w + h @ v)`` (input ``x``, state ``h``); gates with the same
activation (an LSTM's sigmoid gates, NasRNN's eight) are one matmul of ``concat(x, h)`` whose
columns are the gates', the activation applied once, split by gate:

* ``merge_gates_<act>``: ``act(x@w1 + h@v1), act(x@w2 + h@v2)`` ->
  ``split(act(concat(x, h) @ [[w1, w2], [v1, v2]]))``;
* ``merge_gates_more_<act>``: a gate joins gates already merged:
  ``act(concat(x, h) @ wc), act(x@w + h@v)`` -> ``split(act(concat(x, h) @ [wc, [w; v]]))``;
* ``merge_matmul_shared_lhs_<act>``: ``act(x@w1), act(x@w2)`` -> ``split(act(x @ [w1, w2]))``.

Each is ``merge_matmul_sum`` and ``merge_matmul_shared_lhs`` (passes/merge_parallel.py) with the
activation moved through the split, in one step: taken one at a time, the merged matmul loses the
activations it had as epilogues and is slower until all of them have moved, a detour the search
rarely walks. ``act`` is relu, sigmoid or tanh; the weight blocks are concatenations folded after
the search.
"""
from __future__ import annotations

from typing import Any, Callable

from graphopt.ir.node import Value, op as build, op_multi
from graphopt.passes.merge_parallel import ACTIVATIONS, _shape
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import PatternRule, rule

PASS = "search"


def _matrix(m: Match, *names: str) -> "MatchFail | None":
    """Why the named values are not static matrices (weights), or None."""
    for k in names:
        s = _shape(m[k])
        if s is None or len(s) != 2 or not all(isinstance(d, int) for d in s):
            return m.fail(f"{k} is not a static matrix", m[k])
    return None


def _rows_agree(m: Match) -> "MatchFail | None":
    """``x`` and ``h`` agree outside their last axis (they can be concatenated on it)."""
    sx, sh = _shape(m["x"]), _shape(m["h"])
    if sx is None or sh is None or len(sx) < 2 or sx[:-1] != sh[:-1]:
        return m.fail(f"inputs {sx} and {sh} differ outside the last dim", m["x"])
    return None


def _no_broadcast(m: Match, root: Value) -> "MatchFail | None":
    add = root.node.inputs[0].node
    if any(_shape(v) != _shape(add.out) for v in add.inputs):
        return m.fail("the add broadcasts", add.out)
    return None


def _width(v: Value) -> int:
    s = _shape(v)
    assert s is not None
    return int(s[-1])


def _cat(*vals: Value, axis: int) -> Value:
    return build("concat", *vals, axis=axis)


def _merged(act: str, x: Value, w: Value, widths: tuple[int, int]) -> list[Value]:
    rank = len(_shape(x) or ())
    y = build(act, build("matmul", x, w))
    return list(op_multi("split", y, axis=rank - 1, sizes=widths))


# ---- act(x@w1 + h@v1), act(x@w2 + h@v2) --------------------------------------------------------

def _gates(act: str) -> Callable[..., Any]:
    def lhs(x: Any, w1: Any, h: Any, v1: Any, w2: Any, v2: Any) -> Any:
        return (op(act, op.add(op.matmul(x, w1), op.matmul(h, v1))),
                op(act, op.add(op.matmul(x, w2), op.matmul(h, v2))))
    return lhs


def _gates_check(m: Match) -> "MatchFail | None":
    f = _matrix(m, "w1", "v1", "w2", "v2") or _rows_agree(m)
    if f is not None:
        return f
    if _width(m["w1"]) != _width(m["v1"]) or _width(m["w2"]) != _width(m["v2"]):
        return m.fail("a gate's two weights differ in width", m["w1"])
    return _no_broadcast(m, m.roots[0]) or _no_broadcast(m, m.roots[1])


def _gates_rhs(act: str) -> Callable[[Match], list[Value]]:
    def rhs(m: Match) -> list[Value]:
        ax = len(_shape(m["x"]) or ()) - 1
        w = _cat(_cat(m["w1"], m["v1"], axis=0), _cat(m["w2"], m["v2"], axis=0), axis=1)
        return _merged(act, _cat(m["x"], m["h"], axis=ax), w,
                       (_width(m["w1"]), _width(m["w2"])))
    return rhs


# ---- act(concat(x, h) @ wc), act(x@w + h@v) ----------------------------------------------------

def _more(act: str) -> Callable[..., Any]:
    def lhs(x: Any, h: Any, wc: Any, w: Any, v: Any) -> Any:
        return (op(act, op.matmul(op.concat(x, h, axis=attr("ax")), wc)),
                op(act, op.add(op.matmul(x, w), op.matmul(h, v))))
    return lhs


def _more_check(m: Match) -> "MatchFail | None":
    f = _matrix(m, "wc", "w", "v") or _rows_agree(m)
    if f is not None:
        return f
    if m.attrs["ax"] not in (-1, len(_shape(m["x"]) or ()) - 1):
        return m.fail("the concat is not on the last axis", m["x"])
    if _width(m["w"]) != _width(m["v"]):
        return m.fail("the gate's two weights differ in width", m["w"])
    return _no_broadcast(m, m.roots[1])


def _more_rhs(act: str) -> Callable[[Match], list[Value]]:
    def rhs(m: Match) -> list[Value]:
        xh = m.roots[0].node.inputs[0].node.inputs[0]  # the concat(x, h) the merged gates read
        w = _cat(m["wc"], _cat(m["w"], m["v"], axis=0), axis=1)
        return _merged(act, xh, w, (_width(m["wc"]), _width(m["w"])))
    return rhs


# ---- act(x@w1), act(x@w2) ----------------------------------------------------------------------

def _shared(act: str) -> Callable[..., Any]:
    def lhs(x: Any, w1: Any, w2: Any) -> Any:
        return op(act, op.matmul(x, w1)), op(act, op.matmul(x, w2))
    return lhs


def _shared_check(m: Match) -> "MatchFail | None":
    f = _matrix(m, "w1", "w2")
    if f is not None:
        return f
    if (_shape(m["w1"]) or ())[0] != (_shape(m["w2"]) or ())[0]:
        return m.fail("weights differ in rows", m["w1"])
    return None


def _shared_rhs(act: str) -> Callable[[Match], list[Value]]:
    def rhs(m: Match) -> list[Value]:
        return _merged(act, m["x"], _cat(m["w1"], m["w2"], axis=1),
                       (_width(m["w1"]), _width(m["w2"])))
    return rhs


def _search(name: str, lhs: Any, rhs: Any, check: Any) -> PatternRule:
    return rule(name, lhs, rhs, check, source=__name__, kind="search", pass_name=PASS)


RULES: list[PatternRule] = [r for act in ACTIVATIONS for r in (
    _search(f"merge_gates_{act}", _gates(act), _gates_rhs(act), _gates_check),
    _search(f"merge_gates_more_{act}", _more(act), _more_rhs(act), _more_check),
    _search(f"merge_matmul_shared_lhs_{act}", _shared(act), _shared_rhs(act), _shared_check),
)]


class MergeGates(RewritePass):
    """Replay pass: every gate merge of this module, once wherever it matches (the search applies
    them only where the cost model says so)."""

    name = "merge_gates"
    rules = tuple(RULES)
