"""The decoder-with-past contract: the cache's shape facts (``CacheSpec``) and the input / output
names (``IO``) that generation loops (transformers' ONNX exports, onnxruntime-genai) use.

Inputs: ``input_ids`` i64 [batch, seq]; ``attention_mask`` i64 [batch, past + seq] (1 = token,
0 = padding); ``position_ids`` i64 [batch, seq]; ``past_key_values.{i}.key`` / ``.value``
[batch, num_kv_heads, past, head_size] for each layer i (past may be 0).
Outputs: ``logits`` [batch, seq, vocab]; ``present.{i}.key`` / ``.value``
[batch, num_kv_heads, past + seq, head_size] = concat(past, new) along axis 2.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import GraphOptError

__all__ = ["CacheSpec", "IO", "check_io", "DTYPES"]

DTYPES = {"float32": np.float32, "float16": np.float16}  # cache dtypes the loops support
_ONNX_ELEM = {"float32": "tensor(float)", "float16": "tensor(float16)"}


@dataclass(frozen=True)
class CacheSpec:
    """Shape facts of a decoder-with-past: layers, heads, sizes, the sliding window (a key j is
    kept for query i when ``i - window < j <= i``; None: no window), the number of positions the
    model supports and the cache dtype."""

    num_layers: int
    num_kv_heads: int
    num_heads: int
    head_size: int
    hidden_size: int
    vocab_size: int
    window: int | None = None
    context_length: int = 2048
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for f in ("num_layers", "num_kv_heads", "num_heads", "head_size", "hidden_size",
                  "vocab_size", "context_length"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise GraphOptError(f"CacheSpec.{f} must be a positive int, got {v!r}")
        if self.num_heads % self.num_kv_heads:
            raise GraphOptError(f"CacheSpec: num_heads {self.num_heads} is not a multiple of "
                                f"num_kv_heads {self.num_kv_heads}")
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, np.integer))
                              or w <= 0):
            raise GraphOptError(f"CacheSpec.window must be None or a positive int, got {w!r}")
        if self.dtype not in DTYPES:
            raise GraphOptError(f"CacheSpec.dtype {self.dtype!r} is not one of {sorted(DTYPES)}")

    @property
    def np_dtype(self) -> type:
        """The numpy dtype of the cache tensors."""
        return DTYPES[self.dtype]

    def to_json(self) -> str:
        """The spec as a JSON object (all fields, by name)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "CacheSpec":
        """The spec that ``to_json`` wrote; unknown or missing fields are an error."""
        try:
            d = json.loads(text)
        except ValueError as e:
            raise GraphOptError(f"CacheSpec JSON does not parse: {e}") from None
        if not isinstance(d, dict):
            raise GraphOptError(f"CacheSpec JSON must be an object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING}
        unknown = sorted(set(d) - names)
        missing = sorted(required - set(d))
        if unknown or missing:
            raise GraphOptError(f"CacheSpec JSON: unknown fields {unknown}, missing {missing}")
        return cls(**d)


class IO:
    """The contract's tensor names; ``*_TEMPLATE`` are the printf forms genai_config.json uses."""

    INPUT_IDS = "input_ids"
    ATTENTION_MASK = "attention_mask"
    POSITION_IDS = "position_ids"
    LOGITS = "logits"
    PAST_KEY_TEMPLATE = "past_key_values.%d.key"
    PAST_VALUE_TEMPLATE = "past_key_values.%d.value"
    PRESENT_KEY_TEMPLATE = "present.%d.key"
    PRESENT_VALUE_TEMPLATE = "present.%d.value"

    @staticmethod
    def past_key(i: int) -> str:
        """Name of layer i's past keys."""
        return IO.PAST_KEY_TEMPLATE % i

    @staticmethod
    def past_value(i: int) -> str:
        """Name of layer i's past values."""
        return IO.PAST_VALUE_TEMPLATE % i

    @staticmethod
    def present_key(i: int) -> str:
        """Name of layer i's present keys."""
        return IO.PRESENT_KEY_TEMPLATE % i

    @staticmethod
    def present_value(i: int) -> str:
        """Name of layer i's present values."""
        return IO.PRESENT_VALUE_TEMPLATE % i

    @staticmethod
    def pasts(spec: CacheSpec) -> list[str]:
        """Past input names, key then value per layer."""
        return [n for i in range(spec.num_layers) for n in (IO.past_key(i), IO.past_value(i))]

    @staticmethod
    def presents(spec: CacheSpec) -> list[str]:
        """Present output names, key then value per layer (in the order of ``pasts``)."""
        return [n for i in range(spec.num_layers)
                for n in (IO.present_key(i), IO.present_value(i))]

    @staticmethod
    def inputs(spec: CacheSpec) -> list[str]:
        """All input names the contract requires."""
        return [IO.INPUT_IDS, IO.ATTENTION_MASK, IO.POSITION_IDS] + IO.pasts(spec)

    @staticmethod
    def outputs(spec: CacheSpec) -> list[str]:
        """All output names the contract requires."""
        return [IO.LOGITS] + IO.presents(spec)


def _dim_ok(d: Any, want: int) -> bool:
    return not isinstance(d, (int, np.integer)) or int(d) == want


def check_io(inputs: dict[str, tuple[str, Sequence[Any]]],
             outputs: dict[str, tuple[str, Sequence[Any]]], spec: CacheSpec, where: str) -> None:
    """Raise a GraphOptError naming every way the model's inputs / outputs (name -> (ONNX type
    string like "tensor(float)", shape with ints for static dims)) break the contract: missing
    or extra inputs, missing outputs, wrong element types, ranks or static head dims."""
    problems: list[str] = []
    want_in, want_out = IO.inputs(spec), IO.outputs(spec)
    missing_in = [n for n in want_in if n not in inputs]
    missing_out = [n for n in want_out if n not in outputs]
    extra_in = [n for n in inputs if n not in want_in]
    if missing_in:
        problems.append(f"missing inputs {missing_in}")
    if missing_out:
        problems.append(f"missing outputs {missing_out}")
    if extra_in:
        problems.append(f"inputs outside the contract {extra_in} (nothing would feed them)")
    cache = _ONNX_ELEM[spec.dtype]
    kv_shape = ("batch", spec.num_kv_heads, "seq", spec.head_size)
    i64 = ("tensor(int64)",)
    wanted: list[tuple[str, dict, tuple[str, ...], tuple]] = [
        (IO.INPUT_IDS, inputs, i64, ("batch", "seq")),
        (IO.ATTENTION_MASK, inputs, i64, ("batch", "seq")),
        (IO.POSITION_IDS, inputs, i64, ("batch", "seq")),
        (IO.LOGITS, outputs, ("tensor(float)", cache), ("batch", "seq", spec.vocab_size)),
    ] + [(n, inputs, (cache,), kv_shape) for n in IO.pasts(spec)] \
      + [(n, outputs, (cache,), kv_shape) for n in IO.presents(spec)]
    for name, table, elem, shape in wanted:
        if name not in table:
            continue
        got_elem, got_shape = table[name]
        if got_elem not in elem:
            problems.append(f"{name} is {got_elem}, the contract says {elem[-1]}")
        if got_shape is not None and len(got_shape) != len(shape):
            problems.append(f"{name} has rank {len(got_shape)}, the contract says {len(shape)}")
        elif got_shape is not None and not all(_dim_ok(g, w) for g, w in zip(got_shape, shape)
                                               if isinstance(w, int)):
            problems.append(f"{name} has shape {list(got_shape)}, the contract says "
                            f"{list(shape)}")
    if problems:
        raise GraphOptError("the model does not follow the decoder-with-past contract: "
                            + "; ".join(problems), where=where)
