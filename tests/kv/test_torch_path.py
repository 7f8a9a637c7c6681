"""The torch path of the KV cache: prefill / decode callables of a derivation, greedy generation
over a preallocated cache, and the decode graph through generated kernels (Triton's interpreter
on CPU; the real kernels on a GPU)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch

import graphopt
from graphopt.errors import GraphOptError
from graphopt.kv.generate import generate
from graphopt.kv.spec import IO, CacheSpec
from graphopt.kv.torch_generate import generate_torch
from graphopt.kv.torch_path import decode_callable, prefill_callable
from graphopt.ops import opaque
from tests import models

pytestmark = pytest.mark.filterwarnings(  # masked-off lanes of interpreted kernels divide by 0
    "ignore::RuntimeWarning:triton.runtime.interpreter")

MAX_LENGTH = 24
PROMPTS = [[5, 17, 33, 2, 9, 100], [7, 8, 11]]  # batch 2, the second left-padded


def _optimize(name: str, target: str = "cpu") -> tuple[Any, Any]:
    m, ex, _ = models.build(name)
    om = graphopt.optimize(m, ex, target, kv_cache=True, max_length=MAX_LENGTH, budget=0,
                           check=False)
    return m, om


@pytest.fixture(scope="module")
def llama() -> tuple[Any, Any]:
    return _optimize("llama", "a100")  # a GPU target: the kernel tests lower the same graph


@pytest.fixture(scope="module")
def gpt2() -> tuple[Any, Any]:
    return _optimize("gpt2")


@pytest.fixture(scope="module")
def mistral() -> tuple[Any, Any]:
    return _optimize("mistral")


def _step_inputs(spec: CacheSpec, past: int, new: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Contract inputs for ``new`` tokens after ``past`` random cached ones (batch 2, the
    second row left-padded by two slots)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, past + new, dtype=torch.int64)
    mask[1, :2] = 0
    feed = {IO.INPUT_IDS: torch.randint(0, spec.vocab_size, (2, new), generator=g),
            IO.ATTENTION_MASK: mask,
            IO.POSITION_IDS: (mask.cumsum(1) - 1).clamp(min=0)[:, past:]}
    for p in IO.pasts(spec):
        feed[p] = torch.randn(2, spec.num_kv_heads, past, spec.head_size, generator=g)
    return feed


def _no_ort(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: Any, **k: Any) -> None:
        raise AssertionError("an opaque node ran in ONNX Runtime")

    monkeypatch.setattr(opaque, "run_onnx_node", fail)


def _close(got: dict[str, torch.Tensor], want: dict[str, Any], atol: float = 2e-5) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        w = w if isinstance(w, torch.Tensor) else torch.from_numpy(w)
        torch.testing.assert_close(got[k], w, rtol=1e-4, atol=atol, msg=k)


# ---- the callables ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("past,new", [(5, 1), (0, 4), (4, 3)])
def test_decode_callable_matches_the_onnx_decode_model(name: str, past: int, new: int,
                                                       request: pytest.FixtureRequest,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, om = request.getfixturevalue(name)
    spec = om.kv.derivation.spec
    feed = _step_inputs(spec, past, new)
    sess = ort.InferenceSession(om.kv.decode_bytes, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()],
                    sess.run(None, {k: v.numpy() for k, v in feed.items()})))
    dec = decode_callable(om.kv.derivation)
    _no_ort(monkeypatch)  # the glue (Shape, Range, Concat) runs as torch ops
    got = dec(**feed)
    assert list(got) == IO.outputs(spec)
    _close(got, {k: want[k] for k in got})


def test_prefill_callable_is_the_original_plus_the_cache(llama: tuple[Any, Any]) -> None:
    m, om = llama
    d = om.kv.derivation
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]])
    mask = torch.ones_like(ids)
    pre = prefill_callable(d)(ids, mask)
    assert list(pre) == IO.outputs(d.spec)
    with torch.no_grad():
        torch.testing.assert_close(pre[IO.LOGITS], m(ids, mask)[0], rtol=1e-4, atol=2e-5)
    feed = {IO.INPUT_IDS: ids, IO.ATTENTION_MASK: mask,
            IO.POSITION_IDS: torch.arange(8).expand(2, 8)}
    feed.update({p: torch.zeros(2, d.spec.num_kv_heads, 0, d.spec.head_size)
                 for p in IO.pasts(d.spec)})
    _close(pre, decode_callable(d)(**feed))


def test_kernels_need_a_gpu_target(gpt2: tuple[Any, Any]) -> None:
    with pytest.raises(GraphOptError, match="GPU targets"):
        decode_callable(gpt2[1].kv.derivation, "cpu", kernels=True)


# ---- generation ---------------------------------------------------------------------------------

def _transformers(m: Any, n: int) -> torch.Tensor:
    """transformers' greedy generate on PROMPTS (left-padded), with its own cache."""
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    hf = m.inner
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        return hf.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                           max_new_tokens=n)


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral"])
def test_generate_torch_matches_transformers_and_onnx_runtime(
        name: str, request: pytest.FixtureRequest) -> None:
    m, om = request.getfixturevalue(name)
    spec = om.kv.derivation.spec
    n = MAX_LENGTH - len(PROMPTS[0]) + 1  # up to the derivation's max_length
    got = generate_torch(decode_callable(om.kv.derivation), spec, PROMPTS, max_new_tokens=n)
    assert got.shape == (2, len(PROMPTS[0]) + n) and got.dtype == torch.int64
    torch.testing.assert_close(got, _transformers(m, n), rtol=0, atol=0)
    sess = ort.InferenceSession(om.kv.decode_bytes, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got.numpy(), generate(sess, spec, PROMPTS, max_new_tokens=n))


def test_the_cache_is_allocated_once(llama: tuple[Any, Any]) -> None:
    """Every call's past is a view of the same buffers, grown by one slot per step; a prompt
    given as a tensor with a mask gives the same tokens as the list of prompts."""
    _, om = llama
    d = om.kv.derivation
    dec = decode_callable(d)
    seen: list[dict[str, tuple[int, int]]] = []
    steps: list[int] = []

    def spy(**feed: torch.Tensor) -> Any:
        seen.append({p: (feed[p].untyped_storage().data_ptr(), feed[p].shape[2])
                     for p in IO.pasts(d.spec)})
        steps.append(feed[IO.INPUT_IDS].shape[1])
        return dec(**feed)

    got = generate_torch(spy, d.spec, PROMPTS, max_new_tokens=5)
    assert steps == [6, 1, 1, 1, 1]
    for p in IO.pasts(d.spec):
        assert len({s[p][0] for s in seen}) == 1
        assert [s[p][1] for s in seen] == [0, 6, 7, 8, 9]
    ids = torch.tensor([[5, 17, 33, 2, 9, 100], [0, 0, 0, 7, 8, 11]])
    mask = (ids != 0).long()
    torch.testing.assert_close(generate_torch(dec, d.spec, ids, mask, 5), got, rtol=0, atol=0)


def test_generate_torch_refusals(gpt2: tuple[Any, Any]) -> None:
    _, om = gpt2
    spec = om.kv.derivation.spec
    dec = decode_callable(om.kv.derivation)
    with pytest.raises(GraphOptError, match="context length"):
        generate_torch(dec, spec, PROMPTS, max_new_tokens=MAX_LENGTH)
    with pytest.raises(GraphOptError, match="dict by output name or a tuple"):
        generate_torch(lambda **kw: dec(**kw)[IO.LOGITS], spec, PROMPTS, max_new_tokens=2)

    def short(**kw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = list(dec(**kw).values())
        out[1] = out[1][:, :, 1:]
        return tuple(out)

    with pytest.raises(GraphOptError, match="past \\+ new along axis 2"):
        generate_torch(short, spec, PROMPTS, max_new_tokens=2)
    assert generate_torch(dec, spec, PROMPTS, max_new_tokens=0).tolist() == \
        [[5, 17, 33, 2, 9, 100], [0, 0, 0, 7, 8, 11]]


# ---- generated kernels --------------------------------------------------------------------------

def _count_launches(module: Any, kind: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the launches of the kernels of ``module``'s regions of ``kind`` (equal regions
    share one kernel module: each is wrapped once)."""
    calls: list[int] = []
    mods = {id(mod): mod for step, mod in zip(module.lowered.steps, module._kernels)
            if step.region is not None and step.region.kind == kind}
    for mod in mods.values():
        def counted(*a: Any, _launch: Callable[..., Any] = mod.launch, **k: Any) -> Any:
            calls.append(1)
            return _launch(*a, **k)

        monkeypatch.setattr(mod, "launch", counted)
    return calls


def test_decode_attention_runs_through_the_decode_kernel(llama: tuple[Any, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode graph through generated kernels (interpreted) equals the torch callable; each
    layer's attention is a decode-attention region and its kernel runs, for a decode step and
    for the prompt's call."""
    _, om = llama
    d = om.kv.derivation
    ker = decode_callable(d, "a100", interpret=True)
    atts = [s.region for s in ker.module.lowered.steps
            if s.region is not None and s.region.anchor is not None
            and s.region.anchor.op == "attention"]
    assert [r.kind for r in atts] == ["decode_attention"] * d.spec.num_layers
    calls = _count_launches(ker.module, "decode_attention", monkeypatch)
    cpu = decode_callable(d)
    for past, new in ((7, 1), (0, 5)):
        feed = _step_inputs(d.spec, past, new, seed=past)
        _close(ker(**feed), cpu(**feed), atol=1e-4)
    assert len(calls) == 2 * d.spec.num_layers


def test_generate_through_interpreted_kernels(llama: tuple[Any, Any]) -> None:
    _, om = llama
    d = om.kv.derivation
    ker = decode_callable(d, "a100", interpret=True)
    want = generate_torch(decode_callable(d), d.spec, PROMPTS, max_new_tokens=2)
    torch.testing.assert_close(generate_torch(ker, d.spec, PROMPTS, max_new_tokens=2), want,
                               rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_kernels_match_the_cpu_callable(llama: tuple[Any, Any]) -> None:
    """On a GPU: the decode graph's kernels (autotuned) agree with the CPU callable for a prompt
    call and a decode step, the decode-attention regions are there, and 20 greedy tokens from a
    CUDA cache equal the CPU loop's."""
    m, om = llama
    d = om.kv.derivation
    ker = decode_callable(d, "a100").to("cuda")
    assert sum(r.kind == "decode_attention" for r in ker.module.lowered.regions) == \
        d.spec.num_layers
    cpu = decode_callable(d)
    for past, new in ((0, 6), (9, 1)):
        feed = _step_inputs(d.spec, past, new, seed=new)
        got = ker(**{k: v.cuda() for k, v in feed.items()})
        _close({k: v.cpu() for k, v in got.items()}, cpu(**feed), atol=1e-3)
    n = MAX_LENGTH - len(PROMPTS[0]) + 1
    got = generate_torch(ker, d.spec, PROMPTS, max_new_tokens=n)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), generate_torch(cpu, d.spec, PROMPTS, max_new_tokens=n),
                               rtol=0, atol=0)
