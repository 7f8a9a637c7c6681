"""Constant folding: a node whose inputs are all constants becomes constants.

The one folder of the compiler. The ONNX importer folds shape computations as it reads a model
(``frontends/onnx.py``), the cleanup pass folds what rewrites leave over constants
(``passes/cleanup.py``'s ``ConstantFold``), and the search folds the weights its rewrites
concatenated (``search/stage.py``); the last two through the engine's rule
(``rewrite/fold.py::FoldRule``). They differ only in the size policy (``FoldPolicy``).

What folds: a pure IR op, computed with its numpy aspect; or an opaque ONNX node of a
deterministic standard op type (``FOLDABLE_ONNX``), run alone in ONNX Runtime. Random and other
impure ops never fold; neither do results whose dtype has no numpy form (bf16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import Graph
from .node import ConstData, Node, Value, constant
from .types import DType, TensorType, ValueType

# standard ONNX op types that are deterministic and cheap to run alone: an opaque node of one of
# these types folds when its inputs are constants
FOLDABLE_ONNX = frozenset({
    "Shape", "Size", "Range", "ConstantOfShape", "Cast", "CastLike", "Reshape", "Squeeze",
    "Unsqueeze", "Concat", "Gather", "GatherElements", "GatherND", "Slice", "Identity", "Expand",
    "Tile", "Transpose", "Flatten", "Split", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where",
    "Min", "Max", "Floor", "Ceil", "Sqrt", "Sign", "ReduceSum", "ReduceProd", "ReduceMax",
    "ReduceMin", "NonZero", "Trilu", "EyeLike", "OneHot", "ScatterND", "ScatterElements",
})
# a folded result over this many bytes, computed from external data, is written to a file
SPILL_BYTES = 1 << 26
# ONNX ops whose output can be much larger than their inputs: the size is computed before running
_GROWING_ONNX = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "OneHot", "EyeLike"})


@dataclass(frozen=True)
class FoldPolicy:
    """How large a fold may be (sizes in elements)."""

    max_elements: int = 1 << 20
    # True: the limit holds for results larger than the node's inputs only (a fold that does not
    # grow the model is always taken); False: each output is held to it
    growth_only: bool = True
    # a result over this is not folded while a constant input over it is also read by other
    # nodes: the fold would store that data twice (tied weights); None: no such rule
    shared_max_elements: int | None = 1 << 16
    # a result of more bytes than the node's constant inputs is folded only up to this many
    # bytes (None: no such rule). 0 after quantization: a fold never undoes a compression
    # (dequantize_linear of int8 / 4-bit weights back to a float constant)
    max_growth_bytes: int | None = None
    # an opaque ONNX node reading a constant over this is not run (None: any size)
    max_onnx_input_elements: int | None = None
    # a result of another dtype than the node declares is cast to it (the importer); False: it
    # is an op bug, reported as a "mismatch"
    cast: bool = False


@dataclass(frozen=True)
class NotFolded:
    """Why a foldable node was not folded: ``kind`` "large", "shared", "error" (evaluating it
    failed: ``error``) or "mismatch" (the result contradicts the node's declared type)."""

    kind: str
    reason: str
    error: BaseException | None = None


def foldable(n: Node) -> bool:
    """Whether ``n`` is a node folding applies to: an op that folds (see the module docstring)
    over constants that hold data, with outputs numpy can hold. Sizes are not looked at."""
    from ..ops.registry import get_op

    if n.op in ("input", "constant") or not n.inputs:
        return False
    if not all(v.node.op == "constant" and v.node.const.has_array for v in n.inputs):
        return False
    if not all(isinstance(t, TensorType) and _numpy_form(t.dtype) for t in n.out_types):
        return False
    if n.op == "opaque":
        return (n.attrs.get("proto") is not None
                and n.attrs.get("domain", "") in ("", "ai.onnx")
                and n.attrs["op_type"] in FOLDABLE_ONNX
                and not n.attrs.get("captured"))
    return bool(get_op(n.op).pure)


def fold_node(n: Node, policy: FoldPolicy = FoldPolicy(),
              readers: dict[int, int] | None = None) -> "list[Value] | NotFolded | None":
    """Constants for ``n``'s outputs, why not (``NotFolded``), or None when ``n`` is not
    foldable at all. ``readers``: how many nodes read each node (by id; ``readers_of``), for the
    shared-input rule."""
    if not foldable(n):
        return None
    limit = policy.max_onnx_input_elements
    if n.op == "opaque" and limit is not None and any(
            int(np.prod(v.node.const.shape)) > limit for v in n.inputs):
        return NotFolded("large", f"an input has more than {limit} elements")
    ins = [np.asarray(v.node.const.array) for v in n.inputs]
    in_elems = sum(int(a.size) for a in ins)
    est = _estimate(n, ins)
    if est is not None:
        why = _size_rule(n, est, in_elems, policy, readers)
        if why is not None:
            return why
    try:
        outs = _evaluate(n, ins)
    except Exception as e:  # the node may fail at run time too: keep it, say why
        return NotFolded("error", f"{type(e).__name__}: {e}", e)
    arrays = [np.asarray(o) for o in outs]
    why = _size_rule(n, [int(a.size) for a in arrays], in_elems, policy, readers)
    if why is not None:
        return why
    if len(arrays) != len(n.out_types):
        return NotFolded("mismatch", f"folding gave {len(arrays)} values for "
                                     f"{len(n.out_types)} outputs")
    vals = []
    origin = _folded_origin(n)
    for i, (a, t) in enumerate(zip(arrays, n.out_types)):
        got = _as_declared(i, a, t, policy.cast)
        if isinstance(got, NotFolded):
            return got
        vals.append(constant(_const_of(got, n), origin=origin))
    return vals


def _const_of(arr: np.ndarray, n: Node) -> ConstData:
    """A folded result as a ConstData: spilled to a file (``ConstData.spilled``) when it is over
    SPILL_BYTES and computed from external (file-backed) constants, so the weights of a model
    read from external data stay on disk (a transposed weight is not a second copy in memory);
    else held in memory."""
    if arr.nbytes > SPILL_BYTES and arr.dtype.kind in "biufc" and any(
            v.node.const.external is not None for v in n.inputs):
        return ConstData.spilled(arr)
    return ConstData(arr)


def _folded_origin(n: Node) -> "Origin | None":
    """The folded value's origin: the node's, naming the one named constant it was computed
    from (a weight folded through a transpose keeps the weight's name: ``permute(p_weight)``)."""
    from .node import Origin

    named = {v.node.origin.name for v in n.inputs
             if v.node.op == "constant" and v.node.origin is not None and v.node.origin.name}
    if n.origin is None or len(named) != 1:
        return n.origin
    return Origin(n.origin.source, f"{n.origin.name}({named.pop()})", n.origin.detail)


def readers_of(g: Graph) -> dict[int, int]:
    """How many distinct nodes read each node of ``g`` (a graph output counts as one)."""
    readers = {id(n): len({id(u) for u, _ in us}) for n, us in g.users().items()}
    for v in g.outputs:
        readers[id(v.node)] = readers.get(id(v.node), 0) + 1
    return readers


# ---- helpers ------------------------------------------------------------------------------------

def _numpy_form(dt: DType) -> bool:
    if dt == DType.string:
        return True
    try:
        dt.to_numpy()
    except TypeError:
        return False
    return True


def _numel(t: ValueType) -> int | None:
    if not isinstance(t, TensorType) or not t.is_static:
        return None
    n = 1
    for d in t.shape or ():
        n *= int(d)
    return n


def _nbytes(t: ValueType) -> float:
    n = _numel(t)
    return 0.0 if n is None else n * float(t.dtype.itemsize)  # type: ignore[union-attr]


def _size_rule(n: Node, sizes: list[int], in_elems: int, policy: FoldPolicy,
               readers: dict[int, int] | None) -> NotFolded | None:
    """Whether a result of ``sizes`` (elements per output) is too large to fold."""
    total = sum(sizes)
    if policy.growth_only:
        large = total > policy.max_elements and total > in_elems
    else:
        large = any(s > policy.max_elements for s in sizes)
    if large:
        return NotFolded("large", f"{total} elements (limit {policy.max_elements})")
    if policy.max_growth_bytes is not None:
        out_b = sum(_nbytes(t) for t in n.out_types)
        in_b = sum(_nbytes(v.type) for v in n.inputs)
        if out_b > in_b and out_b > policy.max_growth_bytes:
            return NotFolded("large", f"{out_b:.0f} bytes from {in_b:.0f} bytes of constants "
                                      f"(growth limit {policy.max_growth_bytes})")
    shared = policy.shared_max_elements
    if shared is not None and readers is not None and total > shared and any(
            readers.get(id(v.node), 1) > 1 and (_numel(v.type) or 0) > shared
            for v in n.inputs):
        return NotFolded("shared", "would copy a large constant other nodes keep reading")
    return None


def _evaluate(n: Node, ins: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    if n.op == "opaque":
        from ..ops.opaque import run_onnx_node

        return run_onnx_node(ins, n.attrs)
    from ..ops.registry import get_op

    with np.errstate(all="ignore"):
        return tuple(get_op(n.op).numpy(ins, n.attrs))


def _as_declared(i: int, arr: np.ndarray, t: Any, cast: bool) -> "np.ndarray | NotFolded":
    """A folded value checked against (or, with ``cast``, cast to) its declared type."""
    assert isinstance(t, TensorType)
    if t.dtype != DType.string:
        want = t.dtype.to_numpy()
        if arr.dtype != want:
            if not cast:
                return NotFolded("mismatch", f"folding output {i} gave {arr.dtype}, the node "
                                             f"declares {t}")
            arr = arr.astype(want, copy=False)
    if t.shape is not None and t.is_static and tuple(arr.shape) != tuple(t.shape):
        return NotFolded("mismatch", f"folding output {i} gave shape {list(arr.shape)}, the node "
                                     f"declares {t}")
    return arr


def _estimate(n: Node, ins: list[np.ndarray]) -> list[int] | None:
    """Elements of each output before computing them, where cheap to know (None: unknown)."""
    sizes = [_numel(t) for t in n.out_types]
    if all(s is not None for s in sizes):
        return [int(s) for s in sizes if s is not None]
    if n.op != "opaque" or n.attrs["op_type"] not in _GROWING_ONNX:
        return None
    op_type = n.attrs["op_type"]
    try:
        if op_type == "ConstantOfShape":
            return [int(np.prod(ins[0].astype(np.int64)))]
        if op_type == "Expand":
            return [int(np.prod(np.broadcast_shapes(ins[0].shape,
                                                    tuple(int(x) for x in ins[1]))))]
        if op_type == "Tile":
            return [int(ins[0].size * np.prod(ins[1].astype(np.int64)))]
        if op_type == "Range":
            start, limit, delta = (float(np.asarray(a).reshape(())) for a in ins[:3])
            return [max(int(np.ceil((limit - start) / delta)), 0)] if delta else None
        if op_type == "OneHot":  # indices' shape with the depth inserted
            return [int(ins[0].size) * max(int(np.asarray(ins[1]).reshape(-1)[0]), 0)]
        if op_type == "EyeLike":  # the input's (2-D) shape
            return [int(ins[0].size)]
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return None
