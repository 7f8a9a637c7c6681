"""Every ONNX value type through graphopt: string tensors, sequences, optionals and maps load,
pass all passes, export and run in ONNX Runtime; they are given as check inputs (object / str
arrays, lists, None for an empty optional) and compared exactly.

The backend node cases whose graph carries such a value (an input, output or inferred value of a
non-tensor or string type) and that plain ONNX Runtime passes are each optimized with their own
inputs (the check on) and the written bytes are run against the case's expected outputs.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphopt
from graphopt.check import coerce_inputs, compare_outputs, describe_inputs
from graphopt.errors import CheckError
from graphopt.frontends.onnx import load
from graphopt.frontends.onnx_values import coerce_value, from_runtime, leaves
from graphopt.ir.types import DType, OpaqueType, TensorType


def _special(tp: onnx.TypeProto) -> bool:
    kind = tp.WhichOneof("value")
    return kind != "tensor_type" or tp.tensor_type.elem_type == TensorProto.STRING


def _carries_special(model: onnx.ModelProto) -> bool:
    g = model.graph
    vis = list(g.input) + list(g.output)
    try:
        vis += list(onnx.shape_inference.infer_shapes(model).graph.value_info)
    except Exception:  # noqa: BLE001 - cases whose inference fails still count by their I/O
        pass
    return any(_special(v.type) for v in vis)


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _passes(data: bytes, names: list[str], case: Any) -> None:
    from onnx.backend.test.runner import Runner

    sess = _session(data)
    for ins, outs in case.data_sets:
        Runner.assert_similar_outputs(outs, sess.run(None, dict(zip(names, ins))), case.rtol,
                                      case.atol)


def _cases() -> list[Any]:
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_node_model_tests()
    out = []
    for c in cases:
        if not _carries_special(c.model):
            continue
        names = [i.name for i in c.model.graph.input]
        try:
            _passes(c.model.SerializeToString(), names, c)
        except Exception:  # noqa: BLE001 - not counted: plain ONNX Runtime fails it too
            continue
        out.append(c)
    return out


CASES = _cases()


def test_enough_cases() -> None:
    """The selection holds the string, sequence and optional cases the issue names."""
    names = {c.name for c in CASES}
    assert len(CASES) >= 40, sorted(names)
    for want in ("test_string_concat", "test_regex_full_match_basic", "test_equal_string",
                 "test_sequence_insert_at_back", "test_identity_opt", "test_identity_sequence",
                 "test_strnormalizer_nostopwords_nochangecase"):
        assert want in names


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backend_case_round_trip(case: Any) -> None:
    names = [i.name for i in case.model.graph.input]
    ins, _ = case.data_sets[0]
    om = graphopt.optimize(case.model, inputs=dict(zip(names, ins)), budget=0.3)
    assert om.report["check"]["ok"]
    _passes(om.onnx_model().SerializeToString(), names, case)


# ---- values: coercion, reading back, exact comparison ---------------------------------------------

def _seq_model() -> onnx.ModelProto:
    """A sequence input, a string input; outputs: the sequence's length, each string twice."""
    seq_t = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    g = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"]),
         helper.make_node("StringConcat", ["t", "t"], ["u"])],
        "g",
        [helper.make_value_info("s", seq_t),
         helper.make_tensor_value_info("t", TensorProto.STRING, [3])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("u", TensorProto.STRING, [3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def test_sequence_and_string_inputs_checked() -> None:
    model = _seq_model()
    seq = [np.ones(2, np.float32), np.zeros(5, np.float32)]
    om = graphopt.optimize(model, inputs={"s": seq, "t": np.array(["ab", "Cd", "é"])})
    assert om.report["check"]["ok"]
    assert om.report["check"]["inputs"] == {"s": "seq(f32[2];f32[5])", "t": "string[3]"}
    from graphopt.check import run_onnx

    n, u = run_onnx(om.onnx_model(), {"s": seq, "t": np.array(["x", "y", "z"], dtype=object)})
    assert int(n) == 2 and list(u) == ["xx", "yy", "zz"]


def test_coerce_refuses_wrong_kinds() -> None:
    g = load(_seq_model())
    with pytest.raises(CheckError, match="takes a sequence"):
        coerce_inputs(g, {"s": np.ones(3, np.float32), "t": np.array(["a", "b", "c"])})
    with pytest.raises(CheckError, match="takes strings"):
        coerce_inputs(g, {"s": [], "t": np.ones(3, np.float32)})
    with pytest.raises(CheckError, match=r"input 's\[1\]' has dtype int64"):
        coerce_inputs(g, {"s": [np.ones(1, np.float32), np.ones(1, np.int64)],
                          "t": np.array(["a", "b", "c"])})


def test_coerce_strings_and_optionals() -> None:
    st = TensorType((2,), DType.string)
    out = coerce_value("x", st, np.array([b"a", b"\xc3\xa9"]))
    assert out.dtype == object and list(out) == ["a", "é"]
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.INT32, [1]))
    ot = OpaqueType(opt.SerializeToString(), "optional")
    assert coerce_value("o", ot, None) is None
    assert coerce_value("o", ot, np.array([3], np.int32)).dtype == np.int32
    with pytest.raises(CheckError, match="has dtype float64"):
        coerce_value("o", ot, np.array([3.0]))
    assert describe_inputs({"o": None, "m": {1: 2.0}}) == {"o": "none", "m": "map(1)"}


def test_runtime_values_read_back() -> None:
    assert from_runtime(None) is None
    got = from_runtime([np.ones(2), {"a": 1.0}])
    assert isinstance(got, list) and isinstance(got[1]["a"], np.ndarray)


def test_compare_is_exact_and_structural() -> None:
    e = [np.array(["a", "b"], dtype=object), np.ones(2, np.float32)]
    same = compare_outputs([e], [[np.array(["a", "b"], dtype=object), np.ones(2, np.float32)]],
                           ["s"])
    assert same.ok
    other = compare_outputs([e], [[np.array(["a", "c"], dtype=object), np.ones(2, np.float32)]],
                            ["s"])
    assert not other.ok and "1 of 2 elements differ" in other.outputs[0].reason
    shorter = compare_outputs([e], [e[:1]], ["s"])
    assert not shorter.ok and "structure differs" in shorter.outputs[0].reason
    assert not compare_outputs([None], [np.ones(1)], ["o"]).ok
    assert compare_outputs([None], [None], ["o"]).ok
    assert not compare_outputs([{"a": np.ones(1)}], [{"b": np.ones(1)}], ["m"]).ok
    assert [x[0] for x in leaves("m", {"a": 1, "b": [2]}, {"a": 1, "b": [2]})] \
        == ["m['a']", "m['b'][0]"]


def _ml_model(node: onnx.NodeProto, inp: onnx.ValueInfoProto, out: onnx.ValueInfoProto
              ) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", [inp], [out])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                               helper.make_opsetid("ai.onnx.ml", 3)])


def test_map_values_through() -> None:
    """A sequence of maps out (ZipMap) and a map in (DictVectorizer): kept opaque, exported,
    checked exactly in ONNX Runtime."""
    smap = helper.make_map_type_proto(TensorProto.STRING,
                                      helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    zipmap = _ml_model(
        helper.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml",
                         classlabels_strings=["a", "b", "c"]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
        helper.make_value_info("z", helper.make_sequence_type_proto(smap)))
    om = graphopt.optimize(zipmap, inputs={"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert om.report["check"]["ok"] and om.report["check"]["outputs"][0]["dtype"] == "value"
    from graphopt.check import run_onnx

    (z,) = run_onnx(om.onnx_model(), {"x": np.ones((2, 3), np.float32)})
    assert [sorted(d) for d in z] == [["a", "b", "c"]] * 2
    vec = _ml_model(
        helper.make_node("DictVectorizer", ["d"], ["v"], domain="ai.onnx.ml",
                         string_vocabulary=["a", "b", "c"]),
        helper.make_value_info("d", smap),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 3]))
    om = graphopt.optimize(vec, inputs={"d": {"a": 1.0, "c": 3.0}})
    assert om.report["check"]["ok"] and om.report["check"]["inputs"] == {"d": "map(2)"}


def test_optional_input_empty_and_full() -> None:
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    g = helper.make_graph([helper.make_node("OptionalHasElement", ["o"], ["h"])], "g",
                          [helper.make_value_info("o", opt)],
                          [helper.make_tensor_value_info("h", TensorProto.BOOL, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    from graphopt.check import run_onnx

    for value, has in ((None, False), (np.ones(2, np.float32), True)):
        om = graphopt.optimize(m, inputs={"o": value})
        assert om.report["check"]["ok"]
        assert bool(run_onnx(om.onnx_model(), {"o": value})[0]) is has
