"""End to end: models optimized for a GPU target run through generated kernels in the
interpreter and match eager PyTorch."""
from __future__ import annotations

import pytest
import torch

import graphopt
from graphopt.codegen.runtime import compile_graph, wants_kernels
from graphopt.errors import GraphOptError
from tests import models


@pytest.mark.parametrize("name", ["gpt2_sdpa", "gpt2"])
def test_gpt2_through_kernels_matches_eager(name: str) -> None:
    m, ex, _ = models.build(name)
    om = graphopt.optimize(m, ex, target="a100")
    rt = compile_graph(om.graph, "a100", interpret=True)
    summ = rt.lowered.summary()
    assert summ["regions"].get("matmul", 0) >= 8 and summ["regions"].get("reduction", 0) >= 5
    if name == "gpt2_sdpa":
        assert summ["regions"]["attention"] == 2
    with torch.no_grad():
        got, want = rt(*ex), m(*ex)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)


def test_cpu_tensors_need_interpret() -> None:
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import op
    from tests.codegen.helpers import inp

    a = inp("a", (4,))
    m = compile_graph(Graph([a], [op("exp", a.out)]), "a100", interpret=True)
    m.interpret = False
    with pytest.raises(GraphOptError, match="run on CUDA"):
        m(torch.randn(4))


def test_no_kernels_without_gpu() -> None:
    assert not wants_kernels("cpu")
    if not torch.cuda.is_available():
        assert not wants_kernels("a100")


@pytest.mark.gpu
def test_gpt2_on_gpu_autotuned() -> None:
    m, ex, _ = models.build("gpt2_sdpa")
    om = graphopt.optimize(m, ex, target="a100")
    rt = compile_graph(om.graph, "a100").cuda()
    m = m.cuda()
    ex = tuple(x.cuda() for x in ex)
    with torch.no_grad():
        torch.testing.assert_close(rt(*ex)[0], m(*ex)[0], rtol=1e-3, atol=1e-3)


def test_optimize_result_uses_kernels_when_asked() -> None:
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import op
    from tests.codegen.helpers import inp

    a = inp("a", (3, 5))
    om = graphopt.optimize(Graph([a], [op("softmax", op("exp", a.out), axis=1)]), target="h100")
    mod = om.torch_module(interpret=True)
    assert mod.kernel_count == 1
    t = torch.randn(3, 5)
    torch.testing.assert_close(mod(t), torch.softmax(t.exp(), 1))
    if not torch.cuda.is_available():  # on CPU the plain call runs the torch lowering
        assert not hasattr(om.torch_module(), "kernel_count")
        torch.testing.assert_close(om(t), torch.softmax(t.exp(), 1))


def test_quantized_model_runs_through_the_dequant_matmul_kernel() -> None:
    """optimize(target="a100", quantize="int8-weight"): the int8 weights are in the form the
    Triton quant_matmul kernel fuses, the kernels run (interpreted here) and agree with the
    checked ONNX model."""
    import numpy as np

    from graphopt.quant.config import QuantConfig
    from tests.passes.quant_models import calibration_ids, embed_mlp

    om = graphopt.optimize(embed_mlp(), target="a100",
                           quantize=QuantConfig("int8-weight", min_weight_elements=0),
                           calibration=calibration_ids(), budget=0)
    mod = om.torch_module(interpret=True)
    families = [s.kernel.family for s in mod.lowered.steps if s.kernel is not None]
    assert families.count("quant_matmul") == 2, families
    ids = calibration_ids(seed=5)[0]["ids"]
    y = mod(torch.from_numpy(ids))
    np.testing.assert_allclose(y.numpy(), om(ids), rtol=1e-4, atol=1e-5)
