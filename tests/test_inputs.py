"""graphopt.inputs: the check's inputs are drawn inside what each input's readers require.

One small hand-built ONNX model per kind of constraint, optimized by ``graphopt.optimize`` with
the check on and no inputs given (the check runs the original in ONNX Runtime on the generated
inputs, so an invalid value fails it), plus assertions on the values drawn.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.frontends.onnx import load
from graphopt.inputs import InputsNeeded, generate_inputs, index_bounds, input_needs, \
    make_inputs, symbol_sizes
from graphopt.ir.node import Attrs
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import OpDef, all_ops

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
SEEDS = range(4)


def _model(nodes: Sequence[Any], inputs: Sequence[tuple[str, int, Sequence[Any]]],
           outputs: Sequence[tuple[str, int, Sequence[Any]]],
           inits: Sequence[tuple[str, np.ndarray]] = (), opset: int = 18) -> Any:
    g = helper.make_graph(
        list(nodes), "m", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _checked(m: Any) -> dict[str, np.ndarray]:
    """Optimize with the check on (no inputs given); the inputs of a few seeds."""
    om = graphopt.optimize(m, target="cpu", budget=0)
    assert om.report["check"]["ok"]
    g = load(m)
    return {f"{k}@{s}": v for s in SEEDS for k, v in make_inputs(g, s).items()}


def _values(feeds: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    return [v for k, v in feeds.items() if k.split("@")[0] == name]


def test_indices_in_range_through_where() -> None:
    # NegativeLogLikelihoodLoss's expanded form: labels reach GatherElements through Where's
    # branches (OpDef.value_inputs), not its condition
    nodes = [helper.make_node("Unsqueeze", ["t", "ax"], ["u"]),
             helper.make_node("Equal", ["u", "ign"], ["m"]),
             helper.make_node("Where", ["m", "zero", "u"], ["w"]),
             helper.make_node("GatherElements", ["x", "w"], ["y"], axis=1)]
    m = _model(nodes, [("x", F, [3, 5, 2]), ("t", I64, [3, 2])], [("y", F, [3, 1, 2])],
               [("ax", np.array([1], np.int64)), ("ign", np.array(1, np.int64)),
                ("zero", np.array(0, np.int64))])
    for t in _values(_checked(m), "t"):
        assert t.min() >= 0 and t.max() < 5


def test_index_tuples_per_position() -> None:
    nodes = [helper.make_node("GatherND", ["x", "i"], ["y"])]
    m = _model(nodes, [("x", F, [2, 7, 3]), ("i", I64, [5, 2])], [("y", F, [5, 3])])
    vals = _values(_checked(m), "i")
    for i in vals:
        assert (i[:, 0] < 2).all() and (i[:, 1] < 7).all() and i.min() >= 0
    assert max(int(i[:, 1].max()) for i in vals) >= 2  # the bound is per position, not the min


def test_class_labels() -> None:
    nodes = [helper.make_node("SoftmaxCrossEntropyLoss", ["s", "l"], ["y"])]
    m = _model(nodes, [("s", F, [4, 6]), ("l", I64, [4])], [("y", F, [])], opset=13)
    for lab in _values(_checked(m), "l"):
        assert lab.min() >= 0 and lab.max() < 6
    assert index_bounds(load(m), {}) == {"l": 6}


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_reduce_axes_distinct_inside_the_rank(op: str) -> None:
    nodes = [helper.make_node(op, ["x", "a"], ["y"], keepdims=1)]
    m = _model(nodes, [("x", F, [2, 3, 4]), ("a", I64, [2])], [("y", F, ["p", "q", "r"])])
    for a in _values(_checked(m), "a"):
        assert len(set(a.tolist())) == 2 and a.min() >= 0 and a.max() < 3


def test_unsqueeze_and_squeeze_axes() -> None:
    nodes = [helper.make_node("Unsqueeze", ["x", "a"], ["u"]),
             helper.make_node("Squeeze", ["z", "b"], ["s"])]
    m = _model(nodes, [("x", F, [3, 4]), ("a", I64, [2]), ("z", F, [1, 3, 1, 2]),
                       ("b", I64, [2])], [("u", F, ["u0", "u1", "u2", "u3"]),
                                          ("s", F, ["s0", "s1"])], opset=13)
    feeds = _checked(m)
    for a in _values(feeds, "a"):
        assert len(set(a.tolist())) == 2 and a.max() < 4
    for b in _values(feeds, "b"):
        assert sorted(b.tolist()) == [0, 2]  # the axes of size 1


def test_squeeze_with_too_few_unit_dims_asks_for_inputs() -> None:
    nodes = [helper.make_node("Squeeze", ["z", "b"], ["s"])]
    m = _model(nodes, [("z", F, [1, 3, 2]), ("b", I64, [2])], [("s", F, ["s0"])], opset=13)
    with pytest.raises(InputsNeeded) as e:
        graphopt.optimize(m, target="cpu", budget=0)
    msg = e.value.one_line()
    assert "input 'b'" in msg and "size 1" in msg and "--inputs" in msg and "inputs=" in msg


def test_reshape_target_factors_the_element_count() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    m = _model(nodes, [("x", F, [2, 3, 4]), ("s", I64, [3])], [("y", F, ["p", "q", "r"])])
    vals = _values(_checked(m), "s")
    for s in vals:
        dims = s.tolist()
        known = int(np.prod([d for d in dims if d != -1]))
        assert dims.count(-1) <= 1 and all(d > 0 or d == -1 for d in dims)
        assert known == 24 if -1 not in dims else 24 % known == 0


def test_expand_shape_broadcasts() -> None:
    nodes = [helper.make_node("Expand", ["x", "s"], ["y"])]
    m = _model(nodes, [("x", F, [3, 1]), ("s", I64, [3])], [("y", F, ["p", "q", "r"])])
    for s in _values(_checked(m), "s"):
        assert s[1] == 3 and s[0] >= 1 and s[2] >= 1


def test_split_sizes_sum_to_the_dim() -> None:
    nodes = [helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)]
    m = _model(nodes, [("x", F, [2, 7]), ("s", I64, [3])],
               [("a", F, [2, "a"]), ("b", F, [2, "b"]), ("c", F, [2, "c"])])
    for s in _values(_checked(m), "s"):
        assert s.sum() == 7 and s.min() >= 0


def test_resize_scales_and_sizes() -> None:
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear"),
             helper.make_node("Resize", ["x", "", "", "sz"], ["z"], mode="nearest")]
    m = _model(nodes, [("x", F, [1, 2, 4, 4]), ("sc", F, [4]), ("sz", I64, [4])],
               [("y", F, ["y0", "y1", "y2", "y3"]), ("z", F, ["z0", "z1", "z2", "z3"])],
               opset=13)
    feeds = _checked(m)
    for sc in _values(feeds, "sc"):
        assert sc[0] == sc[1] == 1 and (sc[2:] > 0).all()
    for sz in _values(feeds, "sz"):
        assert sz[0] == 1 and sz[1] == 2 and (sz[2:] >= 1).all()


def test_nms_count_and_thresholds() -> None:
    nodes = [helper.make_node("NonMaxSuppression", ["b", "s", "k", "iou", "st"], ["y"])]
    m = _model(nodes, [("b", F, [1, 6, 4]), ("s", F, [1, 1, 6]), ("k", I64, [1]),
                       ("iou", F, [1]), ("st", F, [1])], [("y", I64, ["n", 3])], opset=11)
    feeds = _checked(m)
    assert all(0 <= v <= 1 for v in _values(feeds, "iou"))
    assert all(0 <= v < 6 for v in _values(feeds, "k"))


def test_one_hot_indices_follow_the_depth_input() -> None:
    # two inputs that must agree: the indices are drawn after the depth they index
    nodes = [helper.make_node("OneHot", ["i", "d", "v"], ["y"])]
    m = _model(nodes, [("i", I64, [5]), ("d", I64, [1])], [("y", F, [5, "d"])],
               [("v", np.array([0.0, 1.0], np.float32))], opset=11)
    g = load(m)
    for s in SEEDS:
        gen = generate_inputs(g, s)
        assert 2 <= int(gen.feeds["d"][0]) < 10
        assert gen.feeds["i"].max() < int(gen.feeds["d"][0]) and gen.feeds["i"].min() >= 0
        assert gen.guessed == []
    _checked(m)


def test_dropout_training_mode_is_off() -> None:
    nodes = [helper.make_node("Dropout", ["x", "r", "t"], ["y"])]
    m = _model(nodes, [("x", F, [3, 4]), ("r", F, []), ("t", B, [])], [("y", F, [3, 4])],
               opset=13)
    feeds = _checked(m)
    assert not any(bool(t) for t in _values(feeds, "t"))
    assert all(0 <= r <= 0.9 for r in _values(feeds, "r"))


def test_strings_and_sequences_are_generated() -> None:
    nodes = [helper.make_node("Equal", ["a", "b"], ["y"])]
    m = _model(nodes, [("a", TensorProto.STRING, [4]), ("b", TensorProto.STRING, [4])],
               [("y", B, [4])], opset=19)
    feeds = _checked(m)
    assert all(v.dtype == object and all(isinstance(x, str) for x in v)
               for v in _values(feeds, "a"))
    seq = helper.make_tensor_sequence_value_info("s", F, None)
    g = helper.make_graph([helper.make_node("SequenceAt", ["s", "p"], ["y"])], "m", [
        seq, helper.make_tensor_value_info("p", I64, [])],
        [helper.make_tensor_value_info("y", F, ["a", "b"])])
    sm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    for s in SEEDS:
        feeds = make_inputs(load(sm), s)
        assert isinstance(feeds["s"], list) and 0 <= int(feeds["p"]) < len(feeds["s"])


def test_model_that_rejects_guessed_values_names_them() -> None:
    # Range with a guessed limit and a start input: nothing says what they must be for the
    # Reshape after it, so ONNX Runtime fails on them and the error names the guessed inputs
    nodes = [helper.make_node("Range", ["a", "b", "one"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    m = _model(nodes, [("a", I64, []), ("b", I64, [])], [("y", I64, [5, 5])],
               [("one", np.array(1, np.int64)), ("shape", np.array([5, 5], np.int64))])
    with pytest.raises(InputsNeeded) as e:
        graphopt.optimize(m, target="cpu", budget=0)
    msg = e.value.one_line()
    assert "'a', 'b'" in msg and "--inputs" in msg and "\n" not in msg


def test_symbols_get_one_size_and_needs_see_them() -> None:
    nodes = [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)]
    m = _model(nodes, [("x", F, ["b", "n"]), ("i", I64, ["k"])], [("y", F, ["b", "k"])])
    g = load(m)
    sizes = symbol_sizes(g, 0)
    assert set(sizes) == {"b", "n", "k"}
    assert [n.hi for n in input_needs(g, sizes)["i"]] == [sizes["n"]]
    _checked(m)


def test_value_inputs_declarations_pass_values_on() -> None:
    """An op declaring ``value_inputs`` maps integer values of those inputs only to themselves
    (on its examples), like index_pass_through for all inputs."""
    rng = np.random.default_rng(0)
    declared = [op for op in all_ops().values() if op.value_inputs]
    assert declared
    for op in declared:
        for ex in op.examples(rng):
            xs = [np.asarray(a) for a in ex.inputs]
            for p in op.value_inputs:
                if xs[p].dtype.kind not in "iuf":
                    continue
                xs = [x if i not in op.value_inputs else
                      rng.integers(100, 200, x.shape).astype(x.dtype) for i, x in enumerate(xs)]
                got = np.unique(np.asarray(op.numpy(xs, ex.attrs)[0]))
                passed = np.unique(np.concatenate([xs[i].ravel() for i in op.value_inputs]))
                assert set(got.tolist()) <= set(passed.tolist()), op.name


def test_order_keeping_paths_keep_joint_needs_others_only_ranges() -> None:
    # axes through a Cast keep "distinct"; through a Concat only the range [0, rank) is left
    nodes = [helper.make_node("Cast", ["a", ], ["ac"], to=I64),
             helper.make_node("ReduceSum", ["x", "ac"], ["y"], keepdims=1),
             helper.make_node("Concat", ["b", "one"], ["bc"], axis=0),
             helper.make_node("ReduceSum", ["x", "bc"], ["z"], keepdims=1)]
    m = _model(nodes, [("x", F, [2, 3, 4]), ("a", TensorProto.INT32, [2]), ("b", I64, [1])],
               [("y", F, ["p", "q", "r"]), ("z", F, ["p", "q", "r"])],
               [("one", np.array([1], np.int64))])
    needs = input_needs(load(m), {})
    assert [(n.lo, n.hi, n.unique_mod) for n in needs["a"]] == [(0, 3, 3)]
    assert [(n.lo, n.hi, n.unique_mod) for n in needs["b"]] == [(0, 3, None)]


def test_more_axes_than_the_rank_asks_for_inputs() -> None:
    nodes = [helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=1)]
    m = _model(nodes, [("x", F, [2, 3]), ("a", I64, [3])], [("y", F, ["p", "q"])])
    with pytest.raises(InputsNeeded, match="3 distinct axes of a rank-2 tensor"):
        make_inputs(load(m))


def test_top_k_at_most_the_dim() -> None:
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=0)]
    m = _model(nodes, [("x", F, [3, 9]), ("k", I64, [1])],
               [("v", F, ["n", 9]), ("i", I64, ["n", 9])], opset=11)
    for k in _values(_checked(m), "k"):
        assert 1 <= int(k[0]) <= 3


def test_cli_says_which_input_and_takes_them_with_inputs(tmp_path: Any,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    import onnx

    from graphopt.cli import EXIT_OK, EXIT_USAGE, main

    nodes = [helper.make_node("Squeeze", ["z", "b"], ["s"])]
    m = _model(nodes, [("z", F, [1, 3, 2]), ("b", I64, [2])], [("s", F, ["s0"])], opset=13)
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(m, path)
    assert main(["optimize", str(path), "-o", str(out), "--budget", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input 'b'" in err[0] and "--inputs" in err[0]
    assert not out.exists()
    np.savez(tmp_path / "in.npz", z=np.ones((1, 3, 2), np.float32), b=np.array([0, 0]))
    # the user's own values (ONNX Runtime takes the repeated axis) are checked as given
    code = main(["optimize", str(path), "-o", str(out), "--budget", "0", "--inputs",
                 str(tmp_path / "in.npz")])
    assert code == EXIT_OK and out.exists()


def test_class_labels_include_the_ignored_index() -> None:
    nodes = [helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], ignore_index=-1)]
    m = _model(nodes, [("x", F, [8, 3]), ("t", I64, [8])], [("y", F, [])], opset=13)
    vals = _values(_checked(m), "t")
    assert all(set(t.tolist()) <= {-1, 0, 1, 2} and t[0] != -1 for t in vals)
    assert any(-1 in t.tolist() for t in vals)


def test_index_bound_declarations_match_the_semantics() -> None:
    """An op declaring ``index_bound`` takes indices up to bound - 1 and refuses the bound."""
    rng = np.random.default_rng(0)
    declared = [op for op in all_ops().values() if type(op).index_bound is not OpDef.index_bound]
    assert declared
    for op in declared:
        for ex in op.examples(rng):
            xs = [np.asarray(a) for a in ex.inputs]
            types = tuple(TensorType(a.shape, DType.from_numpy(a.dtype)) for a in xs)
            attrs = op.normalize_attrs(types, Attrs(ex.attrs))
            for pos in range(len(xs)):
                bound = op.index_bound(pos, types, attrs)
                if bound is None:
                    continue
                assert isinstance(bound, int) and bound >= 1, op.name
                xs[pos] = np.full(xs[pos].shape, bound - 1, xs[pos].dtype)
                op.numpy(xs, attrs)  # the largest index runs
                if xs[pos].size:
                    xs[pos] = np.full(xs[pos].shape, bound, xs[pos].dtype)
                    with pytest.raises(IndexError):
                        op.numpy(xs, attrs)


def test_lengths_equal_to_what_the_shapes_say() -> None:
    # ORT's GroupQueryAttention: total_sequence_length = past + new tokens, seqlens_k = it - 1
    nodes = [helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sk", "tot"],
                              ["y", "pk2", "pv2"], domain="com.microsoft", num_heads=2,
                              kv_num_heads=1)]
    I32 = TensorProto.INT32
    g = helper.make_graph(nodes, "m", [
        helper.make_tensor_value_info(n, t, s) for n, t, s in [
            ("q", F, [1, 3, 16]), ("k", F, [1, 3, 8]), ("v", F, [1, 3, 8]),
            ("pk", F, [1, 1, 2, 8]), ("pv", F, [1, 1, 2, 8]), ("sk", I32, [1]),
            ("tot", I32, [])]],
        [helper.make_tensor_value_info(n, F, s) for n, s in [
            ("y", [1, 3, 16]), ("pk2", [1, 1, 5, 8]), ("pv2", [1, 1, 5, 8])]])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                            helper.make_opsetid("com.microsoft", 1)])
    feeds = _checked(m)
    assert all(int(t) == 5 for t in _values(feeds, "tot"))
    assert all(s.tolist() == [4] for s in _values(feeds, "sk"))


def test_rotary_position_ids_inside_the_cache() -> None:
    nodes = [helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "p"], ["y"])]
    m = _model(nodes, [("x", F, [2, 2, 3, 8]), ("p", I64, [2, 3])], [("y", F, [2, 2, 3, 8])],
               [("cos", np.ones((5, 4), np.float32)), ("sin", np.zeros((5, 4), np.float32))],
               opset=23)
    for p in _values(_checked(m), "p"):
        assert p.min() >= 0 and p.max() < 5


def test_loop_trip_count_from_its_scan_output_and_the_body_runs() -> None:
    # the body slices x[i:i+1] of a 5-element constant: more than 5 trips break the scan shape
    body = helper.make_graph([
        helper.make_node("Identity", ["c_in"], ["c_out"]),
        helper.make_node("Constant", [], ["x"], value=numpy_helper.from_array(
            np.arange(1, 6, dtype=np.float32), "x")),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(
            np.array(1, np.int64), "one")),
        helper.make_node("Add", ["i", "one"], ["end"]),
        helper.make_node("Unsqueeze", ["i", "ax"], ["s0"]),
        helper.make_node("Unsqueeze", ["end", "ax"], ["s1"]),
        helper.make_node("Slice", ["x", "s0", "s1"], ["sl"]),
        helper.make_node("Add", ["y_in", "sl"], ["y_out"]),
        helper.make_node("Identity", ["y_out"], ["scan"])], "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c_in", B, []),
         helper.make_tensor_value_info("y_in", F, [1])],
        [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info(
            "y_out", F, [1]), helper.make_tensor_value_info("scan", F, [1])],
        [numpy_helper.from_array(np.array([0], np.int64), "ax")])
    nodes = [helper.make_node("Loop", ["n", "c", "y"], ["res", "res_scan"], body=body)]
    m = _model(nodes, [("n", I64, []), ("c", B, []), ("y", F, [1])],
               [("res", F, [1]), ("res_scan", F, [5, 1])], opset=13)
    feeds = _checked(m)
    assert all(int(n) == 5 for n in _values(feeds, "n"))
    assert all(bool(c) for c in _values(feeds, "c"))
