"""Pass, PassResult and Pipeline: ordering, fixed points, timing, verification, errors."""
from __future__ import annotations

import pytest

from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, input_node, op
from graphopt.ir.text import parse
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.passes import FunctionPass, Pass, PassResult, Pipeline, merge_stats

SRC = """
graph t(%x: f32[3]) {
  %0: f32[3] = neg(%x)
  %1: f32[3] = neg(%0)
  %2: f32[3] = exp(%1)
  return %2 as "y"
}"""


class PeelNeg(Pass):
    """Removes one neg(neg(x)) pair per run (so a fixed point takes several rounds)."""

    name = "peel_neg"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, g: Graph) -> PassResult:
        self.calls += 1
        done = False

        def fn(n: Node):  # type: ignore[no-untyped-def]
            nonlocal done
            if not done and n.op == "neg" and n.inputs[0].node.op == "neg":
                done = True
                return (n.inputs[0].node.inputs[0],)
            return None

        out = g.map_nodes(fn)
        return PassResult(out, done, {"peeled": int(done)})


def _negs(k: int) -> Graph:
    x = input_node("x", TensorType((3,), DType.f32))
    v = x.out
    for _ in range(k):
        v = op("neg", v)
    return Graph([x], [op("exp", v)], ["y"])


def test_pipeline_runs_passes_in_order_and_records_them() -> None:
    seen: list[str] = []

    def mk(name: str) -> Pass:
        def fn(g: Graph) -> PassResult:
            seen.append(name)
            return PassResult(g, False, {"calls": 1})
        return FunctionPass(name, fn)

    res = Pipeline([mk("a"), mk("b"), mk("c")]).run_traced(parse(SRC))
    assert seen == ["a", "b", "c"]
    assert [r.name for r in res.records] == ["a", "b", "c"]
    assert all(r.seconds >= 0 and r.iteration == 1 and not r.changed for r in res.records)
    assert not res.changed and res.iterations == 1
    assert res.stats() == {"calls": 3}


def test_fixed_point_repeats_until_nothing_changes() -> None:
    p = PeelNeg()
    res = Pipeline([p], fixed_point=True).run_traced(_negs(6))
    assert res.changed
    assert [n.op for n in res.graph.nodes] == ["input", "exp"]
    assert p.calls == 4 and res.iterations == 4  # 3 peels, then one round without change
    assert res.stats() == {"peeled": 3}
    assert res.records[0].nodes_dropped == 3  # two negs, and the exp rebuilt


def test_without_fixed_point_one_round_runs() -> None:
    p = PeelNeg()
    res = Pipeline([p]).run_traced(_negs(6))
    assert p.calls == 1 and res.stats() == {"peeled": 1}


def test_max_iterations_bounds_the_rounds() -> None:
    p = PeelNeg()
    res = Pipeline([p], fixed_point=True, max_iterations=2).run_traced(_negs(10))
    assert p.calls == 2 and res.iterations == 2 and res.changed
    with pytest.raises(ValueError):
        Pipeline([p], max_iterations=0)


def test_changed_flag_without_a_new_graph_does_not_loop() -> None:
    liar = FunctionPass("liar", lambda g: PassResult(g, True, {}))
    res = Pipeline([liar], fixed_point=True).run_traced(parse(SRC))
    assert res.iterations == 1 and not res.changed


def test_a_failing_pass_is_named_with_the_passes_before_it() -> None:
    def boom(g: Graph) -> PassResult:
        raise RuntimeError("kaboom")

    ok = FunctionPass("first", lambda g: PassResult(g, False, {}))
    pipe = Pipeline([ok, FunctionPass("second", lambda g: PassResult(g, False, {})),
                     FunctionPass("broken", boom)])
    with pytest.raises(PassError) as ei:
        pipe.run(parse(SRC))
    e = ei.value
    assert "pass broken failed (after passes: first, second)" in str(e)
    assert "RuntimeError: kaboom" in str(e)
    assert e.pass_name == "broken" and e.passes_before == ["first", "second"]  # type: ignore


def test_an_invalid_result_is_caught_by_the_verifier_naming_the_node() -> None:
    def bad(g: Graph) -> PassResult:
        stray = input_node("stray", TensorType((3,), DType.f32))  # not a graph input
        return PassResult(g.with_outputs([op("add", g.outputs[0], stray.out)]), True, {})

    pipe = Pipeline([FunctionPass("cleanup", lambda g: PassResult(g, False, {})),
                     FunctionPass("bad", bad)])
    with pytest.raises(PassError) as ei:
        pipe.run(parse(SRC))
    msg = str(ei.value)
    assert "pass bad left an invalid graph (after passes: cleanup)" in msg
    assert "'stray' is used but is not a graph input" in msg
    assert ei.value.where and "input" in ei.value.where


def test_a_pass_returning_the_wrong_type_is_an_error() -> None:
    pipe = Pipeline([FunctionPass("oops", lambda g: g)])  # type: ignore[arg-type, return-value]
    with pytest.raises(PassError, match="oops returned Graph, not PassResult"):
        pipe.run(parse(SRC))


def test_pipelines_nest_and_reject_non_passes() -> None:
    inner = Pipeline([PeelNeg()], name="inner", fixed_point=True)
    outer = Pipeline([inner, FunctionPass("noop", lambda g: PassResult(g, False, {}))])
    res = outer.run_traced(_negs(4))
    assert [r.name for r in res.records] == ["inner", "noop"]
    assert res.records[0].stats == {"peeled": 2}
    with pytest.raises(TypeError, match="not a Pass"):
        Pipeline([lambda g: g])  # type: ignore[list-item]


def test_progress_callback_sees_every_pass_and_round() -> None:
    calls: list[tuple[str, int]] = []
    Pipeline([PeelNeg()], fixed_point=True, progress=lambda n, i: calls.append((n, i))
             ).run(_negs(4))
    assert calls == [("peel_neg", 1), ("peel_neg", 2), ("peel_neg", 3)]


def test_record_to_dict_is_json_able() -> None:
    import json

    res = Pipeline([PeelNeg()]).run_traced(_negs(2))
    d = json.loads(json.dumps(res.records[0].to_dict()))
    assert d["name"] == "peel_neg" and d["stats"] == {"peeled": 1} and d["changed"] is True


def test_merge_stats() -> None:
    assert merge_stats([{"a": 1, "n": ["x"]}, {"a": 2, "b": 1, "n": ["y"], "flag": True}]) == {
        "a": 3, "b": 1, "n": ["x", "y"], "flag": True}
