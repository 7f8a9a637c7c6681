"""Quantization end to end: every mode on a small embedding + MLP model, checked in ONNX
Runtime against the float model with the mode's SQNR budget, plus the refusals."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import graphopt
from graphopt.errors import CheckError
from graphopt.quant.config import QuantConfig, QuantError

from .quant_models import calibration_ids, embed_mlp, no_weights


def _cfg(mode: str, **kw: object) -> QuantConfig:
    # tiny layers: the cost model would keep them float (launch overheads), so it is off here
    return QuantConfig(mode, use_cost_model=False, min_weight_elements=0, group_size=32,
                       **kw)  # type: ignore[arg-type]


def _ops(m: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in m.graph.node}


@pytest.mark.parametrize("mode,expect", [
    ("int8", {"DynamicQuantizeLinear", "MatMulInteger"}),
    ("int8-weight", {"DequantizeLinear"}),
    ("int4", {"DequantizeLinear"}),
    ("nf4", {"DequantizeLinear", "Gather"}),
    ("smoothquant", {"QuantizeLinear", "MatMulInteger"}),
    ("llm-int8", {"MatMulInteger"}),
])
def test_modes_meet_their_budget(mode: str, expect: set[str]) -> None:
    model = embed_mlp(outlier_cols=2)
    # two stacked 4-bit layers of random Gaussian weights sit right at 4-bit's default 20 dB
    cfg = _cfg(mode, max_error_db=15.0) if mode in ("int4", "nf4") else _cfg(mode)
    om = graphopt.optimize(model, quantize=cfg, calibration=calibration_ids(),
                           inputs=calibration_ids(seed=7)[0], budget=0)
    rep = om.report["quantization"]
    assert rep["mode"] == mode
    names = {r["name"]: r for r in rep["layers"]}
    assert set(names) >= {"table", "fc1.weight", "fc2.weight"}
    assert names["table"]["mode"] == "embedding-int8"
    # each layer's own output SQNR on the check's inputs, and on the calibration rows
    assert all(names[n]["sqnr_db"] is not None and names[n]["calibration_sqnr_db"] is not None
               for n in ("fc1.weight", "fc2.weight"))
    assert om.report["check"]["ok"]
    out = om.onnx_model()
    assert expect <= _ops(out), _ops(out)
    assert "Gather" in _ops(out)
    # the written model runs and is what was checked: its output SQNR is the reported one
    y = om(calibration_ids(seed=7)[0]["ids"])
    assert np.all(np.isfinite(y))
    for c in rep["check"]:
        assert c["sqnr_db"] >= cfg.min_sqnr_db


def test_int4_file_is_small_and_counts_its_bits(tmp_path: object) -> None:
    model = embed_mlp(k=128, hidden=256)
    cfg = QuantConfig("int4", use_cost_model=False, min_weight_elements=0, max_error_db=15.0)
    om = graphopt.optimize(model, quantize=cfg, calibration=calibration_ids(), budget=0)
    lin = [r for r in om.report["quantization"]["layers"] if r["kind"] == "linear"]
    assert all(r["bits_per_weight"] <= 4.6 for r in lin), lin
    path = os.path.join(str(tmp_path), "q.onnx")
    om.save(path)
    float_bytes = len(model.SerializeToString())
    assert os.path.getsize(path) < float_bytes / 3


def test_per_token_activations_lower_to_integer_matmul() -> None:
    om = graphopt.optimize(embed_mlp(), quantize=_cfg("int8", activations="per-token"),
                           calibration=calibration_ids(), budget=0)
    ops = _ops(om.onnx_model())
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" not in ops


def test_missed_budget_names_worst_layers() -> None:
    with pytest.raises(CheckError) as e:
        graphopt.optimize(embed_mlp(), quantize=_cfg("int4", max_error_db=90.0,
                                                     mixed_precision=False),
                          calibration=calibration_ids(), budget=0)
    msg = e.value.one_line()
    assert "90" in msg and "worst layers" in msg and "weight" in msg


def test_mixed_precision_promotes_the_costly_layers() -> None:
    # int4 everywhere gives ~20 dB here; 32 dB is reachable with some layers at int8
    om = graphopt.optimize(embed_mlp(k=128, hidden=256), quantize=_cfg("int4", max_error_db=32.0),
                           calibration=calibration_ids(), budget=0)
    q = om.report["quantization"]
    mixed = q["mixed_precision"]
    assert mixed["before"]["sqnr_db"] < 32 <= q["check"][0]["sqnr_db"]
    assert mixed["promoted"] and mixed["model_runs"] >= 2
    forms = {r["name"]: r["mode"] for r in q["layers"]}
    promoted = {p["name"] for p in mixed["promoted"]}
    assert all(forms[n] != "int4" for n in promoted)
    assert any(f != "float" for f in forms.values())  # still quantized where it can be


def test_unreachable_budget_is_an_error_not_a_float_model() -> None:
    with pytest.raises(CheckError, match="cannot be met with any layer quantized"):
        graphopt.optimize(embed_mlp(), quantize=_cfg("int4", max_error_db=200.0),
                          calibration=calibration_ids(), budget=0)


def test_nothing_to_quantize() -> None:
    with pytest.raises(QuantError, match="nothing to quantize"):
        graphopt.optimize(no_weights(), quantize="int8", budget=0)


def test_unknown_mode_and_orphan_options() -> None:
    with pytest.raises(QuantError, match="unknown quantization mode"):
        graphopt.optimize(embed_mlp(), quantize="int3")
    with pytest.raises(graphopt.errors.GraphOptError, match="quantize=MODE"):
        graphopt.optimize(embed_mlp(), method="gptq")


def test_calibration_that_does_not_fit() -> None:
    with pytest.raises(QuantError, match="lacks model input"):
        graphopt.optimize(embed_mlp(), quantize=_cfg("int8"), calibration=[{"x": np.zeros(3)}])
    with pytest.raises(QuantError, match="shape"):
        graphopt.optimize(embed_mlp(), quantize=_cfg("int8"),
                          calibration=[{"ids": np.zeros((2, 3, 4), np.int64)}])


def test_lm_head_stays_float_unless_asked() -> None:
    # a tied head: the output projection onto the vocabulary reads the table transposed
    import onnx.helper as h

    model = embed_mlp(k=64, vocab=96)
    g = model.graph
    g.node.append(h.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]))
    g.node.append(h.make_node("MatMul", ["y", "table_t"], ["logits"], name="lm_head"))
    del g.output[:]
    g.output.append(h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                             ["B", "S", 96]))
    om = graphopt.optimize(model, quantize=_cfg("int8-weight"), calibration=calibration_ids(),
                           budget=0)
    rows = {r["name"]: r for r in om.report["quantization"]["layers"]}
    heads = [r for r in rows.values() if r["kind"] == "lm_head"]
    assert heads and all("LM head" in r["left_float"] for r in heads)
    om2 = graphopt.optimize(model, quantize=QuantConfig("int8-weight", lm_head=True,
                                                        min_weight_elements=0),
                            calibration=calibration_ids(), budget=0)
    heads2 = [r for r in om2.report["quantization"]["layers"] if r["kind"] == "lm_head"]
    assert heads2 and all(r["mode"] == "int8-weight" for r in heads2)


def test_gpu_target_uses_the_triton_dequant_matmul_form() -> None:
    from graphopt.codegen.triton.kernels.quant_matmul import quant_pattern

    om = graphopt.optimize(embed_mlp(), target="a100", quantize=_cfg("int8-weight"),
                           calibration=calibration_ids(), budget=0)
    mms = [n for n in om.graph.nodes if n.op == "matmul"]
    assert mms and all(quant_pattern(n) is not None for n in mms)
    # the embedding rows are gathered, then scaled: no dequantize_linear is left anywhere
    assert not any(n.op == "dequantize_linear" for n in om.graph.nodes)


def test_f16_model_weight_only() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((128, 64)) / 11).astype(np.float16)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "f16",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 128])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 64])],
                          initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for mode in ("int8-weight", "int4"):
        om = graphopt.optimize(model, quantize=_cfg(mode, max_error_db=15.0), budget=0)
        assert om.report["quantization"]["summary"]["quantized"] == 1
        dq = [n for n in om.graph.nodes if n.op == "dequantize_linear"]
        assert dq and all(n.out_types[0].dtype.value == "f16" for n in dq)
    with pytest.raises(QuantError, match="f32 only"):
        graphopt.optimize(model, quantize=_cfg("int8"), budget=0)


def test_llm_int8_with_outliers_through_the_cost_model() -> None:
    # outlier columns exist (a gain of 20 on two channels) and the cost model prices the split
    # form; at these sizes it keeps the layers float, and says so
    model = embed_mlp(k=128, hidden=256, outlier_cols=2)
    om = graphopt.optimize(model, quantize=QuantConfig("llm-int8", mixed_precision=False),
                           calibration=calibration_ids(), budget=0)
    rows = {r["name"]: r for r in om.report["quantization"]["layers"]}
    fc1 = rows["fc1.weight"]
    assert fc1["mode"] == "llm-int8" or "cost model" in fc1["left_float"], fc1


def test_llm_int8_splits_the_outlier_columns() -> None:
    # LayerNorm gains of 20 on two channels: those input columns of fc1 go through a float matmul
    om = graphopt.optimize(embed_mlp(outlier_cols=2), quantize=_cfg("llm-int8"),
                           calibration=calibration_ids(), budget=0)
    fc1 = {r["name"]: r for r in om.report["quantization"]["layers"]}["fc1.weight"]
    assert fc1["mode"] == "llm-int8" and fc1["detail"].startswith("2 outlier columns"), fc1
    split = [n for n in om.graph.nodes if n.op == "gather" and n.inputs[1].node.op == "constant"
             and n.inputs[1].node.const.array.tolist() == [0, 1]]
    assert split, "the outlier columns 0 and 1 are gathered for the float matmul"
    float_mm = [n for n in om.graph.nodes if n.op == "matmul" and n.inputs[0] == split[0].out]
    assert float_mm and float_mm[0].inputs[1].node.op == "constant"


def test_promoted_layers_report_their_new_sqnr() -> None:
    om = graphopt.optimize(embed_mlp(k=128, hidden=256), quantize=_cfg("int4", max_error_db=32.0),
                           calibration=calibration_ids(), budget=0)
    q = om.report["quantization"]
    rows = {r["name"]: r for r in q["layers"]}
    still = [rows[p["name"]] for p in q["mixed_precision"]["promoted"]
             if "left_float" not in rows[p["name"]]]
    assert still, q["mixed_precision"]
    assert all(r["sqnr_db"] is not None and r["calibration_sqnr_db"] is not None for r in still)
