"""graphopt.kv.generate (and spec) on the hand-built tiny decoder-with-past, against its numpy
reference that reruns the whole sequence without a cache."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphopt.errors import GraphOptError
from graphopt.kv.generate import generate
from graphopt.kv.spec import IO, CacheSpec

from .handmade import build_model, reference_generate

RAGGED = [[5, 9, 2, 30, 1, 7], [12, 3]]


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny() -> tuple[ort.InferenceSession, CacheSpec, Any]:
    m, spec, ref = build_model()
    return _session(m), spec, ref


def _left_padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    n = max(map(len, rows))
    ids = np.zeros((len(rows), n), np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for b, r in enumerate(rows):
        ids[b, n - len(r):], mask[b, n - len(r):] = r, 1
    return ids, mask


def test_batch_one_matches_the_reference(tiny: Any) -> None:
    s, spec, ref = tiny
    prompt = np.array([[3, 1, 4, 1, 5]])
    out = generate(s, spec, prompt, max_new_tokens=24)
    assert out.dtype == np.int64 and out.shape == (1, 29)
    np.testing.assert_array_equal(out, reference_generate(ref, prompt, None, 24))


def test_left_padded_batch_matches_the_reference(tiny: Any) -> None:
    s, spec, ref = tiny
    ids, mask = _left_padded(RAGGED)
    want = reference_generate(ref, ids, mask, 20)
    np.testing.assert_array_equal(generate(s, spec, RAGGED, max_new_tokens=20), want)
    # the caller's mask wins: padding with a nonzero id changes nothing but the pad column
    padded = np.where(mask == 1, ids, 17)
    got = generate(s, spec, padded, attention_mask=mask, max_new_tokens=20)
    np.testing.assert_array_equal(got[:, ids.shape[1]:], want[:, ids.shape[1]:])
    # each row alone generates what it generates in the batch
    alone = generate(s, spec, [RAGGED[1]], max_new_tokens=20)
    np.testing.assert_array_equal(alone[0, 2:], want[1, ids.shape[1]:])


def test_window_mode_equals_dynamic_when_the_window_holds_everything(tiny: Any) -> None:
    s, spec, _ = tiny
    dyn = generate(s, spec, RAGGED, max_new_tokens=30)
    ring = generate(s, spec, RAGGED, max_new_tokens=30, cache="window", window=40)
    np.testing.assert_array_equal(ring, dyn)


def test_window_mode_matches_a_masked_window_reference(tiny: Any) -> None:
    s, spec, ref = tiny
    rows = [list(range(1, 12)), [12, 3]]  # one prompt longer than the window, one padded
    ids, mask = _left_padded(rows)
    want = reference_generate(ref, ids, mask, 40, window=8)
    assert (want != reference_generate(ref, ids, mask, 40)).any(), "the window must matter"
    np.testing.assert_array_equal(generate(s, spec, rows, max_new_tokens=40, cache="window",
                                           window=8), want)


def test_a_graph_with_its_own_window_runs_in_dynamic_mode() -> None:
    m, spec, ref = build_model(window=8)
    assert spec.window == 8
    prompt = np.array([[4, 8, 15, 16, 23, 42 % 32, 7, 1, 9, 2]])
    want = reference_generate(ref, prompt, None, 30)
    np.testing.assert_array_equal(generate(_session(m), spec, prompt, max_new_tokens=30), want)
    # the ring over the window-free graph generates the same tokens (window from the call),
    # its prompt fed through the ring or prefilled at once by the windowed graph
    m0, spec0, _ = build_model()
    ring = _session(m0)
    np.testing.assert_array_equal(generate(ring, spec0, prompt, max_new_tokens=30,
                                           cache="window", window=8), want)
    np.testing.assert_array_equal(generate(ring, spec, prompt, max_new_tokens=30,
                                           cache="window", prefill_session=_session(m)), want)
    rows = [list(range(1, 12)), [12, 3]]
    ids, mask = _left_padded(rows)
    np.testing.assert_array_equal(
        generate(ring, spec, rows, max_new_tokens=20, cache="window",
                 prefill_session=_session(m)),
        reference_generate(ref, ids, mask, 20))


class _Recorder:
    """An IOBinding wrapper that records how each input / output is bound."""

    def __init__(self, io: Any, log: list[tuple[str, str]]) -> None:
        self._io, self._log = io, log

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._io, name)
        if not name.startswith("bind_"):
            return f

        def bind(*args: Any, **kw: Any) -> Any:
            self._log.append((name, args[0]))
            return f(*args, **kw)
        return bind


class _Session:
    """A session whose bindings are recorded."""

    def __init__(self, s: ort.InferenceSession) -> None:
        self._s = s
        self.log: list[tuple[str, str]] = []
        self.bindings = 0

    def io_binding(self) -> _Recorder:
        self.bindings += 1
        return _Recorder(self._s.io_binding(), self.log)

    def run_with_iobinding(self, io: _Recorder) -> None:
        self.log.append(("run", ""))
        self._s.run_with_iobinding(io._io)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)


def test_dynamic_mode_passes_presents_as_ort_values(tiny: Any) -> None:
    s, spec, _ = tiny
    rec = _Session(s)
    generate(rec, spec, RAGGED, max_new_tokens=6)
    runs = [i for i, (k, _) in enumerate(rec.log) if k == "run"]
    assert len(runs) == 6  # prefill + 5 steps (the last token is not fed)
    decode = rec.log[runs[0] + 1:]
    pasts = set(IO.pasts(spec))
    assert {n for k, n in decode if k == "bind_cpu_input"} == {
        IO.INPUT_IDS, IO.ATTENTION_MASK, IO.POSITION_IDS}
    assert [n for k, n in decode if k == "bind_ortvalue_input"].count(IO.past_key(0)) == 5
    assert {n for k, n in decode if k == "bind_ortvalue_input"} == pasts


def test_window_mode_binds_its_buffers_once(tiny: Any) -> None:
    s, spec, _ = tiny
    for n in (5, 30):
        rec = _Session(s)
        generate(rec, spec, RAGGED, max_new_tokens=n, cache="window", window=8)
        assert rec.bindings == 2  # the prefill's and the ring's
        ring = rec.log[[k for k, _ in rec.log].index("run") + 1:]
        assert sorted(x for k, x in ring if k == "bind_ortvalue_input") == sorted(IO.pasts(spec))
        assert sorted(x for k, x in ring if k == "bind_ortvalue_output") == sorted(
            IO.outputs(spec))


def test_progress_and_zero_new_tokens(tiny: Any) -> None:
    s, spec, _ = tiny
    seen: list[tuple[int, int]] = []
    generate(s, spec, [[1, 2]], max_new_tokens=4, progress=lambda k, n: seen.append((k, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_array_equal(generate(s, spec, [[1, 2], [3]], max_new_tokens=0),
                                  [[1, 2], [0, 3]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt_ids=[[1] * 65]), "more than the model's context length 64"),
    (dict(prompt_ids=[[1] * 30], max_new_tokens=40), "exceed the model's context length"),
    (dict(prompt_ids=[[1, 32]]), "token 32 .* outside the vocabulary"),
    (dict(prompt_ids=[[1, 2]], attention_mask=[[1, 0]]), "pad prompts on the LEFT"),
    (dict(prompt_ids=[[1, 2]], attention_mask=[[1, 1, 1]]), "attention_mask has shape"),
    (dict(prompt_ids=[[1, 2]], cache="static"), "cache='static'"),
    (dict(prompt_ids=[[1, 2]], cache="window"), "needs a positive window"),
    (dict(prompt_ids=[[]]), "non-empty"),
    (dict(prompt_ids=[[1, 2]], max_new_tokens=-1), "max_new_tokens"),
])
def test_clear_errors(tiny: Any, kwargs: dict, match: str) -> None:
    s, spec, _ = tiny
    kwargs.setdefault("max_new_tokens", 4)
    with pytest.raises(GraphOptError, match=match):
        generate(s, spec, **kwargs)


def test_a_model_off_the_contract_is_named() -> None:
    m, spec, _ = build_model()
    del m.graph.output[-1]  # present.1.value
    with pytest.raises(GraphOptError, match=r"missing outputs \['present.1.value'\]"):
        generate(_session(m), spec, [[1, 2]], max_new_tokens=2)
    m, _, _ = build_model()
    wrong = CacheSpec(**{**spec.__dict__, "head_size": 4, "num_heads": 4})
    with pytest.raises(GraphOptError, match="past_key_values.0.key has shape"):
        generate(_session(m), wrong, [[1, 2]], max_new_tokens=2)
    three = CacheSpec(**{**spec.__dict__, "num_layers": 3})
    with pytest.raises(GraphOptError, match="missing inputs .*past_key_values.2.key"):
        generate(_session(m), three, [[1, 2]], max_new_tokens=2)


def test_cache_spec_json_and_names() -> None:
    spec = CacheSpec(num_layers=2, num_kv_heads=2, num_heads=8, head_size=16, hidden_size=128,
                     vocab_size=100, window=32)
    back = CacheSpec.from_json(spec.to_json())
    assert back == spec and back.context_length == 2048 and back.dtype == "float32"
    assert IO.past_key(3) == "past_key_values.3.key" and IO.present_value(1) == "present.1.value"
    assert IO.inputs(spec)[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    with pytest.raises(GraphOptError, match=r"missing \['vocab_size'\]"):
        CacheSpec.from_json(spec.to_json().replace('"vocab_size"', '"vocab"'))
    with pytest.raises(GraphOptError, match="not a multiple"):
        CacheSpec(num_layers=1, num_kv_heads=3, num_heads=8, head_size=4, hidden_size=32,
                  vocab_size=10)
    with pytest.raises(GraphOptError, match="window"):
        CacheSpec(num_layers=1, num_kv_heads=1, num_heads=1, head_size=4, hidden_size=4,
                  vocab_size=10, window=0)
