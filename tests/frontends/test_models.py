"""Acceptance: real (tiny, random) models go torch -> IR -> torch and torch -> IR -> ONNX -> ONNX
Runtime and still compute what the original computes (1e-4 relative: max abs diff / max abs ref).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from graphopt.frontends.fx import from_module
from graphopt.frontends.torch_export import to_callable
from graphopt.ir.graph import Graph
from graphopt.ir.verify import verify
from tests import models

# torch.export warns about its own pytree internals (LeafSpec)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

TOL = 1e-4
NAMES = sorted(models.BUILDERS)


@functools.lru_cache(maxsize=None)
def _lifted(name: str) -> tuple[Graph, tuple[torch.Tensor, ...], tuple[np.ndarray, ...]]:
    module, inputs, input_names = models.build(name)
    with torch.no_grad():
        ref = module(*inputs)
    g = from_module(module, inputs)
    assert g.input_names == input_names
    verify(g)
    return g, inputs, tuple(r.detach().numpy() for r in ref)


def _check(name: str, got: list[np.ndarray], ref: tuple[np.ndarray, ...]) -> None:
    assert len(got) == len(ref), f"{name}: {len(got)} outputs, want {len(ref)}"
    for i, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, \
            f"{name} output {i}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
        err = float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-12))
        assert err <= TOL, f"{name} output {i}: relative error {err:.3g} > {TOL}"


@pytest.mark.parametrize("name", NAMES)
def test_torch_round_trip(name: str) -> None:
    g, inputs, ref = _lifted(name)
    f = to_callable(g)
    with torch.no_grad():
        out = f(*inputs)
    assert isinstance(out, tuple)
    _check(name, [o.numpy() for o in out], ref)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_round_trip(name: str) -> None:
    try:
        from graphopt.frontends.onnx_export import to_model
    except ImportError as e:
        pytest.skip(f"graphopt.frontends.onnx_export is not available yet: {e}")
    import onnxruntime as ort

    g, inputs, ref = _lifted(name)
    opaque = sorted({n.attrs["op_type"] for n in g.nodes if n.op == "opaque"})
    assert not opaque, f"{name}: aten ops without an IR mapping: {opaque}"
    model = to_model(g)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feeds = {n: x.numpy() for n, x in zip(g.input_names, inputs)}
    got = sess.run(None, feeds)
    _check(name, got, ref)


def test_builders_give_what_they_promise() -> None:
    import inspect

    for name in ("gpt2", "llama", "t5", "resnet"):
        module, inputs, input_names = models.build(name)
        assert not module.training
        assert tuple(inspect.signature(module.forward).parameters) == input_names
        assert all(x.shape[0] >= 2 for x in inputs)
    llama = models.build("llama")[0].inner.config
    assert llama.num_key_value_heads < llama.num_attention_heads
    mistral = models.build("mistral")[0].inner.config
    assert mistral.sliding_window < models.SEQ
    with pytest.raises(KeyError, match="no test model"):
        models.build("nope")
