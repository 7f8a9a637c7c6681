"""Cleanup passes: golden-IR rewrite tests (match count, golden IR, numerics, verifier)."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, constant, input_node, op
from graphopt.ir.text import parse
from graphopt.ir.types import DType, TensorType
from graphopt.passes import RULES_DIR
from graphopt.passes.cleanup import CSE, NOOP_RULES, ConstantFold, DeadCode, RemoveNoOps, cleanup
from graphopt.rewrite.context import const_array, is_const_all
from graphopt.subst.rulefile import SubstRule, load_file
from tests.passes.golden import assert_rewrite, counters

# ---- constant folding ---------------------------------------------------------------------------


def test_fold_chain_of_constants() -> None:
    assert_rewrite(ConstantFold(), """
graph t(%x: f32[3]) {
  %0: f32[3] = constant() {data=dense<f32[3]>[1.0, 2.0, 3.0]}
  %1: f32[3] = neg(%0)
  %2: f32[3] = add(%1, %0)
  %3: f32[3] = mul(%x, %2)
  %4: f32[3] = add(%3, %1)
  return %4 as "y"
}""", """
graph t(%x: f32[3]) {
  %0: f32[3] = constant() {data=dense<f32[3]>[0.0, 0.0, 0.0]}
  %1: f32[3] = mul(%x, %0)
  %2: f32[3] = constant() {data=dense<f32[3]>[-1.0, -2.0, -3.0]}
  %3: f32[3] = add(%1, %2)
  return %3 as "y"
}""", {"folded": 2})


def test_fold_keeps_declared_dtype_and_shape() -> None:
    g = parse("""
graph t() {
  %0: i32[2,2] = constant() {data=dense<i32[2,2]>[1, 2, 3, 4]}
  %1: i32[2,2] = mul(%0, %0)
  %2: f16[2,2] = cast(%1) {to=dtype:f16}
  return %2 as "y"
}""")
    res = ConstantFold().run(g)
    (out,) = res.graph.outputs
    assert out.node.op == "constant"
    np.testing.assert_array_equal(const_array(out), np.array([[1, 4], [9, 16]], np.float16))
    assert out.type == TensorType((2, 2), DType.f16)
    assert res.stats["folded"] == 2


def test_fold_skips_results_much_larger_than_inputs() -> None:
    src = """
graph t(%x: f32[20,10]) {
  %0: f32[] = constant() {data=dense<f32[]>[2.0]}
  %1: f32[20,10] = expand(%0) {shape=(20, 10)}
  %2: f32[20,10] = add(%x, %1)
  return %2 as "y"
}"""
    res = ConstantFold(max_elements=100).run(parse(src))
    assert res.stats == {"folded": 0, "skipped_large": 1, "skipped_shared": 0}
    assert not res.changed
    # under the limit it folds
    res = ConstantFold(max_elements=1000).run(parse(src))
    assert res.stats["folded"] == 1


def test_fold_same_size_results_even_when_large() -> None:
    w = constant(np.ones((40, 30), np.float32))
    x = input_node("x", TensorType((2, 40), DType.f32))
    wt = op("transpose", w, perm=(1, 0))
    g = Graph([x], [op("matmul", x.out, op("transpose", wt, perm=(1, 0)))])
    res = ConstantFold(max_elements=100).run(g)  # 1200 elements, but no bigger than the input
    assert res.stats["folded"] == 2 and res.stats["skipped_large"] == 0


def test_fold_does_not_copy_big_shared_constants() -> None:
    # tied embedding: the table is gathered and, transposed, multiplied; folding the transpose
    # would store the table twice
    table = constant(np.ones((50, 30), np.float32))
    ids = input_node("ids", TensorType((4,), DType.i64))
    h = op("gather", table, ids.out, axis=0)
    logits = op("matmul", h, op("transpose", table, perm=(1, 0)))
    g = Graph([ids], [logits])
    res = ConstantFold(shared_max_elements=1000).run(g)
    assert counters(res.stats) == {"skipped_shared": 1} and not res.changed
    # with the table read only by the transpose, folding just replaces it
    x = input_node("x", TensorType((4, 30), DType.f32))
    g2 = Graph([x], [op("matmul", x.out, op("transpose", table, perm=(1, 0)))])
    assert counters(ConstantFold(shared_max_elements=1000).run(g2).stats) == {"folded": 1}
    # small results are always folded
    assert counters(ConstantFold().run(g).stats) == {"folded": 1}


def test_fold_failure_is_reported_not_hidden() -> None:
    g = parse("""
graph t(%x: f32[4]) {
  %0: f32[3] = constant() {data=dense<f32[3]>[1.0, 2.0, 3.0]}
  %1: i64[1] = constant() {data=dense<i64[1]>[7]}
  %2: f32[1] = gather(%0, %1) {axis=0}
  %3: f32[4] = add(%x, %2)
  return %3 as "y"
}""")
    res = ConstantFold().run(g)
    assert res.stats["folded"] == 0
    (note,) = res.stats["not_folded_errors"]
    assert "gather" in note and "IndexError" in note
    assert res.graph == g


def test_fold_deterministic_opaque_but_never_random_ones() -> None:
    from onnx import TensorProto, helper

    from graphopt.frontends.onnx import load

    nodes = [helper.make_node("NonZero", ["c"], ["nz"], name="nz"),
             helper.make_node("RandomUniformLike", ["c"], ["r"], name="rnd", dtype=1),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                     helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("nz", TensorProto.INT64, [1, None]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.attrs["op_type"] for n in g.nodes if n.op == "opaque"] == [
        "NonZero", "RandomUniformLike"]
    # the opaque nodes' input becomes a constant (as after folding upstream)
    c = constant(np.array([0.0, 1.0, 2.0], np.float32))
    g = g.replace({g.inputs[1].out: c})
    res = ConstantFold().run(g)
    nz, y = res.graph.outputs
    assert nz.node.op == "constant"  # deterministic opaque NonZero folded (run alone in ORT)
    np.testing.assert_array_equal(const_array(nz), [[1, 2]])
    assert nz.type == TensorType((1, 2), DType.i64)  # the unknown dim became known
    rnd = y.node.inputs[1].node
    assert rnd.op == "opaque" and rnd.attrs["op_type"] == "RandomUniformLike"
    assert res.stats["folded"] == 1


# ---- no-op removal -------------------------------------------------------------------------------

STATED = load_file(RULES_DIR / "remove_noops.rules")


def test_every_noop_rule_is_stated_in_the_rule_file() -> None:
    for r in NOOP_RULES:
        assert r.kind == "cleanup" and r.pass_name == "remove_noops" and not r.place, r.name
        assert any(s.name.startswith(f"remove_noops.{r.name}") for s in STATED), r.name


@pytest.mark.parametrize("stated", STATED, ids=[r.name for r in STATED])
def test_each_noop_form_is_counted_under_its_rule(stated: SubstRule) -> None:
    # the rule files prove and replay each form; here: which counter it lands in
    res = RemoveNoOps().run(stated.lhs)
    ((name, count),) = counters(res.stats).items()
    assert count == 1 and stated.name.startswith(f"remove_noops.{name}"), res.stats


@pytest.mark.parametrize("src", [
    # the constant broadcasts the result to a bigger shape: not a no-op
    """graph t(%x: f32[3]) {
  %c: f32[2,3] = constant() {data=dense<f32[2,3]>[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
  %0: f32[2,3] = add(%x, %c)
  return %0 as "y"
}""",
    # 0 - x is not x
    """graph t(%x: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[0.0, 0.0, 0.0]}
  %0: f32[3] = sub(%c, %x)
  return %0 as "y"
}""",
    # not every element is one
    """graph t(%x: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[1.0, 1.0, 2.0]}
  %0: f32[3] = mul(%x, %c)
  return %0 as "y"
}""",
    # a real reversal, a real reshape
    """graph t(%x: f32[3]) {
  %0: f32[3] = slice(%x) {starts=(-1,), ends=(-9223372036854775807,), axes=(0,), steps=(-1,)}
  %1: f32[1,3] = reshape(%0) {shape=(1, 3)}
  return %1 as "y"
}""",
])
def test_not_noops_are_kept(src: str) -> None:
    g = parse(src)
    res = RemoveNoOps().run(g)
    assert not res.changed and res.graph == g and res.stats == {}


def test_where_same_and_reduce_over_unit_dims() -> None:
    assert_rewrite(RemoveNoOps(), """
graph t(%x: f32[2,1], %y: f32[2,1]) {
  %0: bool[2,1] = less(%x, %y)
  %1: f32[2,1] = where(%0, %y, %y)
  %2: f32[2,1] = reduce_max(%1) {axes=(1,), keepdims=true}
  %3: f32[2,1] = maximum(%2, %2)
  return %3 as "z"
}""", """
graph t(%x: f32[2,1], %y: f32[2,1]) {
  return %y as "z"
}""", {"where_same": 1, "reduce_max_noop": 1, "maximum_self": 1})


def test_noop_removal_keeps_graph_outputs_named() -> None:
    g = parse("""
graph t(%x: f32[3]) {
  %0: f32[3] = identity(%x)
  %1: f32[3] = identity(%0)
  return %1 as "a", %0 as "b"
}""")
    res = cleanup(g)
    assert res.graph.output_names == ("a", "b")
    assert [v.node for v in res.graph.outputs] == [g.inputs[0]] * 2


# ---- CSE -----------------------------------------------------------------------------------------

def test_cse_merges_equal_constants_then_hash_consing_merges_users() -> None:
    # two constants with equal content (different data handles) -> one; the adds become one node
    x = input_node("x", TensorType((3,), DType.f32))
    c1 = constant(np.array([1.0, 2.0, 3.0], np.float32))
    c2 = constant(np.array([1.0, 2.0, 3.0], np.float32))
    c3 = constant(np.array([1.0, 2.0, 4.0], np.float32))
    a1, a2, a3 = (op("add", x.out, c) for c in (c1, c2, c3))
    g = Graph([x], [op("mul", a1, a2), a3])
    assert a1 != a2
    res = CSE().run(g)
    assert counters(res.stats) == {"constants_merged": 1}
    m = res.graph.outputs[0].node
    assert m.op == "mul" and m.inputs[0] == m.inputs[1]
    ops = [n.op for n in res.graph.nodes]
    assert ops.count("add") == 2 and ops.count("constant") == 2


def test_cse_leaves_large_constants_and_distinct_zeros() -> None:
    x = input_node("x", TensorType((64,), DType.f32))
    big1 = constant(np.ones(64, np.float32))
    big2 = constant(np.ones(64, np.float32))
    z1 = constant(np.array(0.0, np.float32))
    z2 = constant(np.array(-0.0, np.float32))  # different bits: not merged
    g = Graph([x], [op("add", x.out, big1), op("add", x.out, big2), op("mul", x.out, z1),
                    op("mul", x.out, z2)])
    res = CSE(max_bytes=100).run(g)
    assert not res.changed and counters(res.stats) == {}


def test_cse_merges_deterministic_opaque_nodes_only() -> None:
    from onnx import TensorProto, helper

    from graphopt.frontends.onnx import load

    nodes = [helper.make_node("NonZero", ["x"], ["a"], name="nz1"),
             helper.make_node("NonZero", ["x"], ["b"], name="nz2"),
             helper.make_node("RandomNormalLike", ["x"], ["r1"], name="r1"),
             helper.make_node("RandomNormalLike", ["x"], ["r2"], name="r2")]
    i64 = TensorProto.INT64
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("a", i64, [1, None]),
         helper.make_tensor_value_info("b", i64, [1, None]),
         helper.make_tensor_value_info("r1", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("r2", TensorProto.FLOAT, [4])])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    res = CSE().run(g)
    assert counters(res.stats) == {"opaque_merged": 1}
    a, b, r1, r2 = res.graph.outputs
    assert a.node is b.node
    assert r1.node is not r2.node


# ---- dead code -----------------------------------------------------------------------------------

def test_dead_code_reports_unused_inputs_and_pipeline_counts_dropped_nodes() -> None:
    from graphopt.rewrite.passes import Pipeline

    g = parse("""
graph t(%x: f32[3], %unused: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[0.0, 0.0, 0.0]}
  %0: f32[3] = add(%x, %c)
  %1: f32[3] = exp(%0)
  return %1 as "y"
}""")
    res = Pipeline([RemoveNoOps(), DeadCode()]).run_traced(g)
    noop, dead = res.records
    # the add, its constant, and the exp (rebuilt over %x: a new node)
    assert noop.nodes_dropped == 3 and noop.nodes_after == 3
    assert dead.stats["unused_inputs"] == ["unused"]
    assert not dead.changed
    assert res.graph.input_names == ("x", "unused")  # the signature is kept


# ---- helpers and the whole cleanup ---------------------------------------------------------------

def test_const_helpers() -> None:
    x = input_node("x", TensorType((2,), DType.f32)).out
    z = constant(np.zeros((2,), np.float32))
    assert const_array(x) is None
    assert is_const_all(z, 0) and not is_const_all(z, 1) and not is_const_all(x, 0)
    assert not is_const_all(constant(np.zeros((0,), np.float32)), 0)


def test_cleanup_runs_to_a_fixed_point() -> None:
    g = parse("""
graph t(%x: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[1.0, 1.0, 1.0]}
  %d: f32[3] = constant() {data=dense<f32[3]>[1.0, 1.0, 1.0]}
  %0: f32[3] = sub(%c, %d)
  %1: f32[3] = add(%x, %0)
  %2: f32[3] = mul(%1, %c)
  return %2 as "y"
}""")
    res = cleanup(g)
    assert res.graph.outputs[0] == g.inputs[0].out
    assert res.stats["folded"] == 1 and res.stats["add_zero"] == 1 and res.stats["mul_one"] == 1


def test_fold_type_mismatch_is_an_error() -> None:
    from graphopt.ops.registry import get_op

    neg = get_op("neg")
    g = parse("""
graph t() {
  %0: f32[2] = constant() {data=dense<f32[2]>[1.0, 2.0]}
  %1: f32[2] = neg(%0)
  return %1 as "y"
}""")
    orig = type(neg).numpy
    type(neg).numpy = lambda self, xs, attrs: (np.asarray(-xs[0], np.float64),)  # type: ignore
    try:
        with pytest.raises(PassError, match="float64.*declares f32"):
            ConstantFold().run(g)
    finally:
        type(neg).numpy = orig  # type: ignore[method-assign]


def test_fold_bf16_values_without_numpy_form_are_left_alone() -> None:
    data = ConstData(dtype=DType.bf16, shape=(2,), onnx_proto=b"")
    c = Node.build("constant", (), {"data": data}).out
    assert not ConstantFold().run(Graph([], [op("neg", c)])).changed
    f = constant(np.ones(2, np.float32))
    res = ConstantFold().run(Graph([], [op("cast", f, to=DType.bf16)]))
    assert not res.changed and res.stats["folded"] == 0
