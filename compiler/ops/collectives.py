"""Collectives of tensor parallelism, and a rank's block of a value.

A collective node has one of two forms, told apart by its number of operands:

* the **global view**: one operand per rank (``world_size`` of them). Its value is what every
  rank holds after the collective (``all_reduce``: their sum; ``all_gather``: their concatenation
  along ``axis``; ``reduce_scatter``: ``world_size`` outputs, output r = rank r's block of the
  sum). A sharded graph in this form is an ordinary graph over every rank's computation: the
  interpreters run it and the verifier proves rules about it (``passes/rules/tensor_parallel.rules``),
  so a whole sharded model is checked against the original in one process.
* a **rank's view**: one operand, this rank's. It appears only in the per-rank programs that
  ``graphopt.tp`` projects from the global view; its torch aspect calls ``torch.distributed``
  (gloo on CPU, NCCL on GPU) on the default process group. Its numpy aspect cannot run alone.

``shard(x) {axis, rank, world_size}`` is rank ``rank``'s block of ``x`` (equal blocks along
``axis``): the value a rank computes locally from a replicated one (no communication). The rank
projection folds it over constants, so a rank program holds only its block of each weight.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import GraphOptError, ShapeError
from ..ir.node import Attrs
from ..ir.types import TensorType, ValueType
from .registry import Cost, Example, OpDef, nbytes, norm_axis, register, same_dtype, tensor_types

_NO_ONNX = ("a collective exists only in tensor-parallel programs, which run on torch.distributed "
            "(graphopt.tp); ONNX has no collective op")


def _world(name: str, attrs: Attrs) -> int:
    w = attrs.get("world_size")
    if not isinstance(w, int) or isinstance(w, bool) or w < 2:
        raise ShapeError(f"{name}: world_size must be an int >= 2, got {w!r}")
    return w


def _operands(name: str, in_types: Sequence[ValueType], attrs: Attrs) -> tuple[list[TensorType], int]:
    """The operands' tensor types (all of one type) and the world size; 1 or world_size of them."""
    w = _world(name, attrs)
    ts = tensor_types(name, in_types)
    if len(ts) not in (1, w):
        raise ShapeError(f"{name}: {len(ts)} operands; takes 1 (a rank's view) or world_size={w} "
                         f"(the global view)")
    same_dtype(name, ts)
    for t in ts[1:]:
        if t.shape != ts[0].shape:
            raise ShapeError(f"{name}: the ranks' operands differ in type ({ts[0]} vs {t})")
    if ts[0].shape is None:
        raise ShapeError(f"{name}: unknown rank")
    return ts, w


def _axis(name: str, t: TensorType, attrs: Attrs) -> int:
    assert t.shape is not None
    return norm_axis(name, int(attrs["axis"]), len(t.shape))


def _static(name: str, d: Any, what: str) -> int:
    if not isinstance(d, int):
        raise ShapeError(f"{name}: {what} is symbolic ({d!r}); collectives need a static size there")
    return d


def _rank_view(name: str) -> GraphOptError:
    return GraphOptError(f"{name} with one operand is a rank's view: it runs only inside a "
                         f"torch.distributed process group (graphopt.tp.launch), not in one "
                         f"process", where=f"op {name}")


def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise GraphOptError("a rank program's collective ran without an initialized "
                            "torch.distributed process group (launch it with torchrun -m "
                            "graphopt.launch)", where="torch.distributed")
    return dist


def _collective_bytes(ts: Sequence[ValueType]) -> float:
    return float(nbytes(ts[0]))


class _Collective(OpDef):
    cost_class = "collective"
    pure = False  # communication: never folded over constants, never merged with another call
    exact_int = True
    min_inputs = 1
    onnx_missing = _NO_ONNX

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> None:
        return None  # a collective is no part of a single-device decoder

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        """Bytes: one rank's operand (the payload); the cost model prices the transfer with the
        device's link (``transfer``, cost/model.py)."""
        return Cost(0.0, _collective_bytes(in_types), 1)

    def transfer(self, operand: ValueType, attrs: Attrs) -> tuple[int, float]:
        """(latency steps, bytes each rank sends) of the ring algorithm for a rank's operand of
        type ``operand``: the link time is ``steps * alpha + bytes / link_bandwidth``."""
        raise NotImplementedError(self.name)


@register
class AllReduce(_Collective):
    """The sum of every rank's operand, held by every rank."""

    name = "all_reduce"
    attr_names = ("world_size",)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        ts, _ = _operands(self.name, in_types, attrs)
        return (ts[0],)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        if len(xs) == 1:
            raise _rank_view(self.name)
        out = np.asarray(xs[0])
        for x in xs[1:]:
            out = out + np.asarray(x)
        return (np.asarray(out, dtype=np.asarray(xs[0]).dtype),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        if len(xs) > 1:
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return (out,)
        y = xs[0].clone()
        _dist().all_reduce(y)
        return (y,)

    def transfer(self, operand: ValueType, attrs: Attrs) -> tuple[int, float]:
        """Ring all-reduce: a reduce-scatter then an all-gather, 2 (W - 1) steps of n / W."""
        w = attrs["world_size"]
        return 2 * (w - 1), 2.0 * (w - 1) / w * float(nbytes(operand))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a, b, c = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3))
        return [Example([a, b], {"world_size": 2}), Example([a, b, c], {"world_size": 3})]


@register
class AllGather(_Collective):
    """Every rank's operand concatenated along ``axis`` (rank order), held by every rank."""

    name = "all_gather"
    attr_names = ("world_size", "axis")
    index_pass_through = True

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        ts = tensor_types(self.name, in_types)
        if ts and ts[0].shape is not None and "axis" in attrs:
            return attrs.replace(axis=norm_axis(self.name, int(attrs["axis"]), len(ts[0].shape)))
        return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        ts, w = _operands(self.name, in_types, attrs)
        t = ts[0]
        ax = _axis(self.name, t, attrs)
        shp = list(t.shape)  # type: ignore[arg-type]
        shp[ax] = w * _static(self.name, shp[ax], f"axis {ax}")
        return (t.with_shape(tuple(shp)),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        if len(xs) == 1:
            raise _rank_view(self.name)
        return (np.concatenate([np.asarray(x) for x in xs], axis=attrs["axis"]),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        ax = attrs["axis"]
        if len(xs) > 1:
            return (torch.cat(list(xs), dim=ax),)
        w = attrs["world_size"]
        x = xs[0].movedim(ax, 0).contiguous()  # the process group stacks blocks along axis 0
        out = torch.empty((w * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        _dist().all_gather_into_tensor(out, x)
        return (out.movedim(0, ax).contiguous(),)

    def transfer(self, operand: ValueType, attrs: Attrs) -> tuple[int, float]:
        """Ring all-gather: W - 1 steps, each passing one rank's block of n bytes."""
        w = attrs["world_size"]
        return w - 1, float(w - 1) * float(nbytes(operand))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
        return [Example([a, b], {"world_size": 2, "axis": 1}),
                Example([a, b], {"world_size": 2, "axis": 0})]


@register
class ReduceScatter(_Collective):
    """The sum of every rank's operand, split into ``world_size`` equal blocks along ``axis``;
    rank r holds block r (global view: ``world_size`` outputs, output r = block r)."""

    name = "reduce_scatter"
    attr_names = ("world_size", "axis")

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        return AllGather.normalize_attrs(self, in_types, attrs)  # type: ignore[arg-type]

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        ts, w = _operands(self.name, in_types, attrs)
        t = ts[0]
        ax = _axis(self.name, t, attrs)
        shp = list(t.shape)  # type: ignore[arg-type]
        n = _static(self.name, shp[ax], f"axis {ax}")
        if n % w:
            raise ShapeError(f"{self.name}({t}): axis {ax} of size {n} does not split into "
                             f"{w} equal blocks")
        shp[ax] = n // w
        out = t.with_shape(tuple(shp))
        return (out,) * len(ts)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        if len(xs) == 1:
            raise _rank_view(self.name)
        (total,) = AllReduce.numpy(self, xs, attrs)  # type: ignore[arg-type]
        return tuple(np.ascontiguousarray(b) for b in
                     np.split(total, attrs["world_size"], axis=attrs["axis"]))

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        if len(xs) > 1:
            (total,) = AllReduce.torch(self, xs, attrs)  # type: ignore[arg-type]
            return tuple(b.contiguous() for b in total.chunk(attrs["world_size"], attrs["axis"]))
        import torch

        ax, w = attrs["axis"], attrs["world_size"]
        x = xs[0].movedim(ax, 0).contiguous()  # blocks along axis 0, as the process group splits
        out = torch.empty((x.shape[0] // w,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        _dist().reduce_scatter_tensor(out, x)
        return (out.movedim(0, ax).contiguous(),)

    def transfer(self, operand: ValueType, attrs: Attrs) -> tuple[int, float]:
        """Ring reduce-scatter: W - 1 steps of n / W."""
        w = attrs["world_size"]
        return w - 1, float(w - 1) / w * float(nbytes(operand))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a, b = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2))
        return [Example([a, b], {"world_size": 2, "axis": 1}),
                Example([a, b], {"world_size": 2, "axis": 0})]


@register
class Shard(OpDef):
    """Rank ``rank``'s block of ``x``: the ``rank``-th of ``world_size`` equal blocks along
    ``axis`` (a local slice: a rank computes it from a replicated value without communication)."""

    name = "shard"
    attr_names = ("axis", "rank", "world_size")
    min_inputs = max_inputs = 1
    cost_class = "injective"
    partial_read_inputs = (0,)
    exact_int = True
    index_pass_through = True
    onnx_missing = ("a rank's block exists only in tensor-parallel programs (graphopt.tp); the "
                    "rank projection folds it over weights")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return ((0, attrs["axis"]),)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        return AllGather.normalize_attrs(self, in_types, attrs)  # type: ignore[arg-type]

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (t,) = tensor_types(self.name, in_types)
        w = _world(self.name, attrs)
        r = attrs.get("rank")
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < w:
            raise ShapeError(f"{self.name}: rank must be an int in [0, {w}), got {r!r}")
        if t.shape is None:
            raise ShapeError(f"{self.name}: unknown rank")
        ax = _axis(self.name, t, attrs)
        shp = list(t.shape)
        n = _static(self.name, shp[ax], f"axis {ax}")
        if n % w:
            raise ShapeError(f"{self.name}({t}): axis {ax} of size {n} does not split into {w} "
                             f"equal blocks")
        shp[ax] = n // w
        return (t.with_shape(tuple(shp)),)

    @staticmethod
    def block(attrs: Attrs, size: int) -> slice:
        b = size // attrs["world_size"]
        return slice(attrs["rank"] * b, (attrs["rank"] + 1) * b)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        idx = [slice(None)] * x.ndim
        idx[attrs["axis"]] = self.block(attrs, x.shape[attrs["axis"]])
        return (np.ascontiguousarray(x[tuple(idx)]),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        sl = self.block(attrs, x.shape[attrs["axis"]])
        return (x.narrow(attrs["axis"], sl.start, sl.stop - sl.start),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return Cost(0.0, 2.0 * sum(nbytes(t) for t in out_types), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((4, 6)).astype(np.float32)
        return [Example([x], {"axis": 1, "rank": 1, "world_size": 2}),
                Example([x], {"axis": 0, "rank": 3, "world_size": 4})]
