"""The decoder-with-past folder: ``model.onnx`` (+ ``model.onnx.data`` for large weights),
``genai_config.json`` for onnxruntime-genai's generation loop and ``graphopt_kv.json`` (the
CacheSpec). ``write_folder`` writes it atomically, ``load_folder`` opens it in ONNX Runtime and
``run_genai`` generates greedily through onnxruntime-genai.

onnxruntime-genai facts this relies on (checked with 0.18 on ONNX Runtime 1.32): model type
"llama" (or "decoder") takes separate key / value tensors by the names of the contract;
``past_present_share_buffer`` must be false for a concat cache; a batch of prompts is RIGHT-padded
(only trailing ``pad_token_id`` tokens are masked, the logits are read at each row's last real
token) and a batch of one is never masked; ``eos_token_id`` must lie in [0, vocab) and a row that
produces it stops. So ``run_genai`` right-pads, and without a caller's eos it uses a sentinel id
for eos and pad, restarting with another id when the model produces the sentinel (the tokens then
are genai's own greedy choices with no early stop).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphOptError
from ..frontends.onnx_export import EXTERNAL_THRESHOLD
from ..frontends.onnx_io import INLINE_LIMIT, DataSink
from .generate import check_session, prepare_prompts
from .spec import IO, CacheSpec, check_io

__all__ = ["write_folder", "load_folder", "run_genai", "genai_config", "MODEL_FILE",
           "GENAI_CONFIG", "SPEC_FILE"]

MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
GENAI_CONFIG = "genai_config.json"
SPEC_FILE = "graphopt_kv.json"
GENAI_TYPE = "llama"


def genai_config(spec: CacheSpec, max_length: int, eos_token_id: int, pad_token_id: int,
                 bos_token_id: int, share_buffer: bool = False) -> dict[str, Any]:
    """onnxruntime-genai's configuration of a contract model: greedy search, ``max_length``
    tokens (prompt + new) at most; ``share_buffer``: the model's past inputs are buffers of
    context_length slots written in place (graphopt's static cache), else concat caches."""
    return {
        "model": {
            "type": GENAI_TYPE,
            "vocab_size": spec.vocab_size,
            "context_length": spec.context_length,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
            "decoder": {
                "filename": MODEL_FILE,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": spec.head_size,
                "hidden_size": spec.hidden_size,
                "num_attention_heads": spec.num_heads,
                "num_key_value_heads": spec.num_kv_heads,
                "num_hidden_layers": spec.num_layers,
                "inputs": {"input_ids": IO.INPUT_IDS, "attention_mask": IO.ATTENTION_MASK,
                           "position_ids": IO.POSITION_IDS,
                           "past_key_names": IO.PAST_KEY_TEMPLATE,
                           "past_value_names": IO.PAST_VALUE_TEMPLATE},
                "outputs": {"logits": IO.LOGITS,
                            "present_key_names": IO.PRESENT_KEY_TEMPLATE,
                            "present_value_names": IO.PRESENT_VALUE_TEMPLATE},
            },
        },
        "search": {
            "do_sample": False, "num_beams": 1, "num_return_sequences": 1, "top_k": 1,
            "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0,
            "diversity_penalty": 0.0, "no_repeat_ngram_size": 0, "min_length": 0,
            "max_length": max_length, "early_stopping": True,
            "past_present_share_buffer": share_buffer,
        },
    }


# ---- the model's interface ----------------------------------------------------------------

def _value_io(v: Any) -> tuple[str, list[Any] | None]:
    from onnx import helper

    t = v.type.tensor_type
    if not v.type.HasField("tensor_type"):
        return (f"non-tensor {v.type.WhichOneof('value')}", None)
    elem = f"tensor({helper.tensor_dtype_to_np_dtype(t.elem_type).name})" if t.elem_type else "?"
    elem = {"tensor(float32)": "tensor(float)"}.get(elem, elem)
    shape = None if not t.HasField("shape") else [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return elem, shape


def is_static(model: Any, spec: CacheSpec) -> bool:
    """Whether the model's past inputs are static buffers of context_length slots."""
    pasts = set(IO.pasts(spec))
    dims = [_value_io(v)[1] for v in model.graph.input if v.name in pasts]
    return bool(dims) and all(d is not None and d[2] == spec.context_length for d in dims)


def check_model(model: Any, spec: CacheSpec) -> None:
    """Raise a GraphOptError naming how the ModelProto's inputs / outputs break the contract."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    ins = {v.name: _value_io(v) for v in g.input if v.name not in inits}
    outs = {v.name: _value_io(v) for v in g.output}
    check_io(ins, outs, spec, where=f"model {g.name or '(unnamed)'}")


# ---- writing ------------------------------------------------------------------------------

def _nbytes(t: Any) -> int:
    """Bytes of a tensor's data (0 for strings)."""
    from onnx import TensorProto, helper

    if t.data_type == TensorProto.STRING:
        return 0
    return int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(
        t.data_type).itemsize


def _tensor_bytes(t: Any) -> bytes:
    from onnx import numpy_helper

    return t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()


def _external_stub(t: Any, sink: DataSink) -> Any:
    """A TensorProto like ``t`` whose data lives at its place in the sink's file."""
    import onnx

    stub = onnx.TensorProto()
    stub.name, stub.data_type, stub.doc_string = t.name, t.data_type, t.doc_string
    stub.dims.extend(t.dims)
    off, n = sink.write([_tensor_bytes(t)])
    stub.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", sink.location), ("offset", str(off)), ("length", str(n))):
        e = stub.external_data.add()
        e.key, e.value = k, v
    return stub


def _save_model(model: Any, path: Path, external_threshold: int) -> None:
    """Write ``model`` to ``path``; when its initializers hold more than ``external_threshold``
    bytes, those over INLINE_LIMIT go to ``<path>.data`` (the caller's proto is not changed)."""
    import onnx

    g = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        raise GraphOptError("the model refers to external data; load it into the proto first "
                            "(onnx.load with load_external_data=True)")
    if sum(_nbytes(t) for t in g.initializer) <= external_threshold:
        path.write_bytes(model.SerializeToString())
        return
    out = onnx.ModelProto()
    for fd, val in model.ListFields():
        if fd.name != "graph":
            _copy_field(out, fd, val)
    for fd, val in g.ListFields():
        if fd.name != "initializer":
            _copy_field(out.graph, fd, val)
    data = path.parent / (path.name + ".data")
    with open(data, "wb") as f:
        sink = DataSink(f, data.name, data)
        for t in g.initializer:
            big = t.data_type != onnx.TensorProto.STRING and _nbytes(t) > INLINE_LIMIT
            out.graph.initializer.append(_external_stub(t, sink) if big else t)
    path.write_bytes(out.SerializeToString())


def _copy_field(dst: Any, fd: Any, val: Any) -> None:
    repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
    if repeated:
        getattr(dst, fd.name).extend(val)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(val)
    else:
        setattr(dst, fd.name, val)


def _token_id(name: str, v: int | None, spec: CacheSpec) -> int:
    if v is None:
        return spec.vocab_size - 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < spec.vocab_size:
        raise GraphOptError(f"{name} {v!r} is not a token id in [0, {spec.vocab_size})")
    return int(v)


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                               and not (out / SPEC_FILE).exists())):
        raise GraphOptError("exists and is not a folder written by write_folder (or empty); "
                            "refusing to replace it", where=str(out))


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (an old graphopt folder is swapped out whole)."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.rename(out, old / out.name)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / out.name, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_folder(model: Any, spec: CacheSpec, out_dir: str | Path, *,
                 max_length: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, bos_token_id: int | None = None,
                 external_threshold: int = EXTERNAL_THRESHOLD) -> Path:
    """Write the decoder-with-past ``model`` (a ModelProto following the contract), its
    genai_config.json and graphopt_kv.json into ``out_dir``, atomically: the files are made in
    a temporary folder beside it that replaces ``out_dir`` at the end (a failure leaves nothing
    behind). ``max_length`` (prompt + new tokens, default the context length) goes to the genai
    search defaults; eos / pad / bos default to vocab_size - 1 (``run_genai`` replaces them
    unless told otherwise). Returns the folder."""
    import onnx

    out = Path(out_dir)
    check_model(model, spec)
    ml = spec.context_length if max_length is None else max_length
    if isinstance(ml, bool) or not isinstance(ml, (int, np.integer)) \
            or not 0 < ml <= spec.context_length:
        raise GraphOptError(f"max_length {ml!r} must be in [1, context length "
                            f"{spec.context_length}]")
    config = genai_config(spec, int(ml), _token_id("eos_token_id", eos_token_id, spec),
                          _token_id("pad_token_id", pad_token_id, spec),
                          _token_id("bos_token_id", bos_token_id, spec),
                          share_buffer=is_static(model, spec))
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        _save_model(model, tmp / MODEL_FILE, external_threshold)
        onnx.checker.check_model(str(tmp / MODEL_FILE))
        (tmp / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / SPEC_FILE).write_text(spec.to_json() + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---- reading and running ------------------------------------------------------------------

def _read_spec(folder: Path) -> CacheSpec:
    missing = [f for f in (MODEL_FILE, SPEC_FILE) if not (folder / f).is_file()]
    if missing:
        raise GraphOptError(f"not a decoder-with-past folder: missing {missing}",
                            where=str(folder))
    return CacheSpec.from_json((folder / SPEC_FILE).read_text())


def load_folder(out_dir: str | Path, providers: list[str] | None = None
                ) -> tuple[Any, CacheSpec]:
    """(ONNX Runtime session of model.onnx, its CacheSpec) from a folder ``write_folder``
    wrote; the session is checked against the contract."""
    import onnxruntime as ort

    folder = Path(out_dir)
    spec = _read_spec(folder)
    try:
        session = ort.InferenceSession(str(folder / MODEL_FILE),
                                       providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise GraphOptError(f"ONNX Runtime cannot load the model: {e}",
                            where=str(folder / MODEL_FILE)) from None
    check_session(session, spec)
    return session, spec


def _right_padded(ids: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
    out = np.full(ids.shape, pad, np.int32)
    for b in range(ids.shape[0]):
        real = ids[b][mask[b] == 1]
        out[b, :real.size] = real
    return out


def _genai_pass(og: Any, folder: Path, prompts: np.ndarray, n: int, eos: int, pad: int,
                restart_on_eos: bool) -> tuple[np.ndarray, bool]:
    """One greedy run: (new tokens [B, <= n], whether it stopped because the sentinel eos came
    out under ``restart_on_eos``)."""
    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"eos_token_id": eos, "pad_token_id": pad}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompts.shape[1] + n, batch_size=prompts.shape[0])
    gen = og.Generator(model, params)
    gen.append_tokens(prompts)
    new: list[np.ndarray] = []
    hit = False
    while len(new) < n and not gen.is_done():
        gen.generate_next_token()
        tok = np.asarray(gen.get_next_tokens(), np.int64).reshape(-1)
        new.append(tok)
        if restart_on_eos and (tok == eos).any():
            hit = True
            break
    return (np.stack(new, axis=1) if new else np.zeros((prompts.shape[0], 0), np.int64)), hit


def run_genai(out_dir: str | Path, prompt_ids: Any, max_new_tokens: int, *,
              attention_mask: Any = None, eos_token_id: int | None = None,
              pad_token_id: int | None = None) -> np.ndarray:
    """Greedy generation through onnxruntime-genai's own loop (og.Model, og.Generator,
    append_tokens, generate_next_token) on the folder: prompt (left-padded like ``generate``)
    + new ids, int64 [B, L + n]. Without ``eos_token_id`` no row stops early; with it, rows stop
    at eos (then hold ``pad_token_id``, default eos) and the result may be shorter."""
    import onnxruntime_genai as og

    folder = Path(out_dir)
    spec = _read_spec(folder)
    if not (folder / GENAI_CONFIG).is_file():
        raise GraphOptError(f"missing {GENAI_CONFIG}", where=str(folder))
    ids, mask = prepare_prompts(prompt_ids, attention_mask, spec)
    lead = np.argmax(mask, axis=1)  # first real token of each row
    if not all(mask[b, lead[b]:].all() for b in range(ids.shape[0])):
        raise GraphOptError("onnxruntime-genai takes padding only at one end of a prompt; this "
                            "attention_mask has holes")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise GraphOptError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    width = int(mask.sum(axis=1).max())
    if width + max_new_tokens > spec.context_length:
        raise GraphOptError(f"{width} prompt tokens + {max_new_tokens} new tokens exceed the "
                            f"context length {spec.context_length}")
    if max_new_tokens == 0:
        return ids
    b = ids.shape[0]
    # the padding genai sees is trailing pad ids: a row may not end in the pad id
    lasts = {int(ids[r, -1]) for r in range(b)} if b > 1 else set()
    if eos_token_id is not None:
        eos = _token_id("eos_token_id", eos_token_id, spec)
        pad = eos if pad_token_id is None else _token_id("pad_token_id", pad_token_id, spec)
        if pad in lasts:
            raise GraphOptError(f"pad_token_id {pad} ends a prompt; genai would take it for "
                                f"padding")
        new, _ = _genai_pass(og, folder, _right_padded(ids, mask, pad)[:, :width],
                             max_new_tokens, eos, pad, restart_on_eos=False)
        return np.concatenate([ids, new], axis=1)
    excluded = set(lasts)
    for sentinel in range(spec.vocab_size - 1, -1, -1):
        if sentinel in excluded:
            continue
        new, hit = _genai_pass(og, folder, _right_padded(ids, mask, sentinel)[:, :width],
                               max_new_tokens, sentinel, sentinel, restart_on_eos=True)
        if not hit:
            return np.concatenate([ids, new], axis=1)
        excluded |= {int(x) for x in new.ravel()}  # ids the model produced: no sentinels
    raise GraphOptError("every token id came out of the model or ends a prompt: no id is left "
                        "to serve onnxruntime-genai as a never-produced eos / pad")
