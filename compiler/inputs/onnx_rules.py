"""What ONNX ops graphopt keeps opaque require of their inputs' values, by (op type, input slot);
op types outside ONNX's default domain are qualified (``com.microsoft.GroupQueryAttention``,
``readers.rule_key``).

Each rule gets a ``Reader`` (the node, the slot, the value's concrete shape, the node's
attributes, its other inputs' shapes and known values) and returns its ``Need``s: index ranges
from the data they index, axes distinct and inside the rank, shapes that fit the data they
shape, sizes that sum to a dim, thresholds and scales in their ranges. An empty list: nothing
is required (the default ranges of ``graphopt.inputs`` apply).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .needs import Need, Shape, Unmeetable
from .readers import Reader, Rule

RULES: dict[tuple[str, int], Rule] = {}

REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
              "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")
SCALE_CHOICES = (0.5, 1.5, 2.0, 3.0)  # Resize scales: up and down, whole output sizes mostly
SMALL = 4  # exclusive bound of small positive sizes (repeats, new dims)


def rule(*keys: tuple[str, int]) -> Callable[[Rule], Rule]:
    """Register a rule for (ONNX op type, input slot) pairs."""
    def deco(fn: Rule) -> Rule:
        for k in keys:
            RULES[k] = fn
        return fn
    return deco


def _axis(r: Reader, rank: int, name: str = "axis", default: int = 0) -> int:
    return int(r.attrs.get(name, default)) % max(rank, 1)


def _length(r: Reader) -> int:
    """The number of elements of a 1-D (or scalar) input."""
    return int(np.prod(r.shape)) if r.shape else 1


def _str(r: Reader, name: str, default: str) -> str:
    v = r.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


# ---- indices ------------------------------------------------------------------------------------

@rule(("Gather", 1), ("GatherElements", 1), ("ScatterElements", 1), ("Scatter", 1))
def _indices_along_axis(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if not data:
        return []
    return [r.need("indices", lo=0, hi=max(data[_axis(r, len(data))], 1))]


@rule(("GatherND", 1), ("ScatterND", 1))
def _nd_indices(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    b = int(r.attrs.get("batch_dims", 0))
    if not data or not r.shape or b + r.shape[-1] > len(data):
        return []
    return [r.need("index tuples", lo=0, hi=np.maximum(np.array(data[b:b + r.shape[-1]]), 1))]


@rule(("ai.onnx.ml.ArrayFeatureExtractor", 1))
def _feature_indices(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    return [r.need("indices", lo=0, hi=max(data[-1], 1))] if data else []


@rule(("aten.embedding.default", 1), ("aten.embedding_bag.default", 1),
      ("aten._embedding_bag.default", 1))
def _embedding_ids(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    return [r.need("ids", lo=0, hi=max(data[0], 1))] if data else []


@rule(("RotaryEmbedding", 3), ("com.microsoft.RotaryEmbedding", 1))
def _rotary_positions(r: Reader) -> list[Need]:
    cache = r.input_shape(2 if r.op_type.startswith("com.microsoft") else 1)
    return [r.need("position ids", lo=0, hi=max(cache[0], 1))] if cache else []


@rule(("com.microsoft.GroupQueryAttention", 6))
def _gqa_total_length(r: Reader) -> list[Need]:
    total = _gqa_total(r)
    return [] if total is None else [r.need(f"the total sequence length {total} (past + new)",
                                            lo=total, hi=total + 1)]


@rule(("com.microsoft.GroupQueryAttention", 5))
def _gqa_seqlens(r: Reader) -> list[Need]:
    total = _gqa_total(r)
    return [] if total is None else [r.need(f"the total sequence length {total} - 1",
                                            lo=total - 1, hi=total)]


def _gqa_total(r: Reader) -> int | None:
    """GroupQueryAttention's total sequence length: the past's (BNSH past_key) plus the new
    tokens' (query [B, S, hidden])."""
    q, past = r.input_shape(0), r.input_shape(3)
    if not q or len(q) != 3:
        return None
    return q[1] + (past[2] if past and len(past) == 4 else 0)


@rule(("RoiAlign", 2))
def _batch_indices(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    return [r.need("batch indices", lo=0, hi=max(data[0], 1))] if data else []


@rule(("OneHot", 0))
def _one_hot_indices(r: Reader) -> list[Need]:
    depth = r.input_value(1)
    return [] if depth is None else [r.need("indices", lo=0, hi=max(int(np.ravel(depth)[0]), 1))]


@rule(("OneHot", 1))
def _one_hot_depth(r: Reader) -> list[Need]:
    return [r.need("depth", lo=2, hi=10)]


@rule(("NegativeLogLikelihoodLoss", 1), ("SoftmaxCrossEntropyLoss", 1))
def _class_labels(r: Reader) -> list[Need]:
    scores = r.input_shape(0)
    if not scores or len(scores) < 2:
        return []
    c = max(scores[1], 1)
    if "ignore_index" not in r.attrs:
        return [r.need("class labels", lo=0, hi=c)]
    ignore = int(r.attrs["ignore_index"])

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        labels = rng.integers(0, c, size=shape)
        flat = labels.reshape(-1)  # about a quarter ignored, never the first
        flat[1:][rng.random(max(flat.size - 1, 0)) < 0.25] = ignore
        return labels
    return [r.need(f"class labels (or the ignored {ignore})", draw=draw)]


@rule(("SequenceAt", 1), ("SequenceErase", 1), ("SequenceInsert", 2))
def _sequence_position(r: Reader) -> list[Need]:
    seq = r.input_value(0)
    return [] if seq is None else [r.need("position", lo=0, hi=max(len(seq), 1))]


# ---- axes ---------------------------------------------------------------------------------------

def _distinct_axes(r: Reader, rank: int | None, what: str = "axes") -> list[Need]:
    if rank is None:
        return []
    k = _length(r)
    if k > rank:
        raise Unmeetable(f"{k} distinct {what} of a rank-{rank} tensor")
    return [r.need(what, lo=0, hi=max(rank, 1), unique_mod=max(rank, 1))]


@rule(*((op, 1) for op in REDUCE_OPS), ("Slice", 3))
def _reduce_axes(r: Reader) -> list[Need]:
    return _distinct_axes(r, r.input_rank(0))


@rule(("Pad", 3))
def _pad_axes(r: Reader) -> list[Need]:
    return _distinct_axes(r, r.input_rank(0))


@rule(("Unsqueeze", 1))
def _unsqueeze_axes(r: Reader) -> list[Need]:
    rank = r.input_rank(0)
    return [] if rank is None else _distinct_axes(r, rank + _length(r))


@rule(("Squeeze", 1))
def _squeeze_axes(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if data is None:
        return []
    ones = [i for i, d in enumerate(data) if d == 1]
    k = _length(r)
    if k > len(ones):
        raise Unmeetable(f"{k} axes of size 1 to squeeze, the data {list(data)} has "
                         f"{len(ones)}")
    return [r.need("axes (of size 1)", lo=0, hi=max(len(data), 1), unique_mod=len(data),
                   draw=lambda rng, shape: rng.choice(ones, size=shape, replace=False))]


@rule(("CumSum", 1), ("CumProd", 1))
def _one_axis(r: Reader) -> list[Need]:
    rank = r.input_rank(0)
    return [] if not rank else [r.need("axis", lo=0, hi=rank)]


@rule(("DFT", 2))
def _dft_axis(r: Reader) -> list[Need]:
    rank = r.input_rank(0)  # the last dim holds (real, imaginary)
    return [] if not rank or rank < 2 else [r.need("axis", lo=0, hi=rank - 1)]


# ---- shapes and sizes ---------------------------------------------------------------------------

def factorization(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``k`` random factors whose product is ``n`` (0 when n is 0)."""
    dims = [1] * k
    m, p = n, 2
    while m > 1 and p * p <= m:
        while m % p == 0:
            dims[int(rng.integers(k))] *= p
            m //= p
        p += 1
    if m > 1:
        dims[int(rng.integers(k))] *= m
    if n == 0:
        dims[int(rng.integers(k))] = 0
    return dims


@rule(("Reshape", 1))
def _reshape_target(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if data is None:
        return []
    n, k = int(np.prod(data)), _length(r)
    if k == 0 and n != 1:
        raise Unmeetable(f"an empty shape cannot hold the data's {n} elements")

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        dims = factorization(rng, n, k)
        if k and n and rng.integers(2):
            dims[int(rng.integers(k))] = -1  # inferred from the others
        return np.array(dims).reshape(shape)
    return [r.need(f"a shape for the data's {n} elements", draw=draw)]


@rule(("Expand", 1))
def _expand_shape(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if data is None:
        return []
    k = _length(r)

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        out = []
        for i in range(k):
            j = len(data) - k + i
            d = data[j] if j >= 0 else 1
            out.append(int(rng.integers(1, SMALL)) if d == 1 else d)
        return np.array(out, np.int64).reshape(shape)
    return [r.need(f"a shape {list(data)} broadcasts to", draw=draw)]


@rule(("Tile", 1), ("ConstantOfShape", 0), ("CenterCropPad", 1))
def _small_sizes(r: Reader) -> list[Need]:
    return [r.need("sizes", lo=1, hi=SMALL + 1)]


@rule(("Range", 2))
def _range_delta(r: Reader) -> list[Need]:
    return [r.need("step", lo=1, hi=3)]


@rule(("HannWindow", 0), ("HammingWindow", 0), ("BlackmanWindow", 0), ("DFT", 1),
      ("STFT", 1))
def _positive_size(r: Reader) -> list[Need]:
    return [r.need("size", lo=1, hi=9)]


@rule(("STFT", 3))
def _frame_length(r: Reader) -> list[Need]:
    signal = r.input_shape(0)
    return [] if not signal or len(signal) < 2 else [r.need("frame length", lo=1,
                                                              hi=signal[1] + 1)]


def _composition(rng: np.random.Generator, total: int, k: int) -> np.ndarray:
    """``k`` non-negative sizes summing to ``total``."""
    cuts = np.sort(rng.integers(0, total + 1, size=max(k - 1, 0)))
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(np.int64)


@rule(("Split", 1), ("SplitToSequence", 1))
def _split_sizes(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if not data:
        return []
    d = data[_axis(r, len(data))]
    if not r.shape:  # SplitToSequence's scalar: one chunk length
        return [r.need("chunk length", lo=1, hi=max(d, 1) + 1)]
    k = _length(r)
    if k == 0:
        return []
    return [r.need(f"sizes summing to {d}",
                   draw=lambda rng, shape: _composition(rng, d, k).reshape(shape))]


@rule(("TopK", 1))
def _top_k(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if not data:
        return []
    return [r.need("k", lo=1, hi=data[_axis(r, len(data), "axis", -1)] + 1)]


@rule(("ReverseSequence", 1))
def _sequence_lengths(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if not data:
        return []
    t = data[_axis(r, len(data), "time_axis", 0)]
    return [r.need("sequence lengths", lo=1, hi=max(t, 1) + 1)]


@rule(("LSTM", 4), ("GRU", 4), ("RNN", 4))
def _rnn_lengths(r: Reader) -> list[Need]:
    x = r.input_shape(0)
    if not x or len(x) < 2:
        return []
    t = x[1] if int(r.attrs.get("layout", 0)) else x[0]
    return [r.need("sequence lengths", lo=1, hi=max(t, 1) + 1)]


@rule(("TensorScatter", 2))
def _write_indices(r: Reader) -> list[Need]:
    cache, update = r.input_shape(0), r.input_shape(1)
    if not cache or not update or len(cache) != len(update):
        return []
    a = _axis(r, len(cache), "axis", -2)
    room = cache[a] - update[a] + 1
    if _str(r, "mode", "linear") != "linear" or room < 1:
        return [r.need("write indices", lo=0, hi=max(cache[a], 1))]
    return [r.need("write indices", lo=0, hi=room)]


@rule(("Attention", 6))
def _nonpad_lengths(r: Reader) -> list[Need]:
    k = r.input_shape(1)
    if not k or len(k) < 3:
        return []
    return [r.need("key lengths", lo=1, hi=k[-2] + 1)]


@rule(("Loop", 0))
def _trip_count(r: Reader) -> list[Need]:
    carried = len(tuple(r.node.attrs.get("present") or ())) - 2
    scan = r.out_shape(carried) if carried >= 0 else None
    if scan:  # a scan output stacks one row per iteration
        return [r.need(f"the trip count {scan[0]} its scan output's shape says",
                       lo=scan[0], hi=scan[0] + 1)]
    return [r.need("trip count", lo=1, hi=6)]


@rule(("Loop", 1))
def _loop_runs(r: Reader) -> list[Need]:
    return [r.need("the condition to enter the loop (on: the body runs)",
                   draw=lambda rng, shape: np.ones(shape, np.bool_))]


@rule(("AffineGrid", 1))
def _grid_size(r: Reader) -> list[Need]:
    theta = r.input_shape(0)
    if not theta:
        return []
    k = _length(r)

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        dims = [theta[0]] + [int(rng.integers(1, SMALL)) for _ in range(1, 2)] + \
            [int(rng.integers(2, 6)) for _ in range(2, k)]
        return np.array(dims[:k], np.int64).reshape(shape)
    return [r.need(f"a size of batch {theta[0]}", draw=draw)]


@rule(("Col2Im", 2))
def _block_shape(r: Reader) -> list[Need]:
    return [r.need("block shape (ones)", draw=lambda rng, shape: np.ones(shape, np.int64))]


@rule(("Col2Im", 1))
def _image_shape(r: Reader) -> list[Need]:
    x, block = r.input_shape(0), r.input_value(2)
    if not x or len(x) != 3 or block is None:
        return []
    block = [int(b) for b in np.ravel(block)]
    k = len(block)
    pads = list(r.attrs.get("pads", [0] * 2 * k))
    strides = list(r.attrs.get("strides", [1] * k))
    dil = list(r.attrs.get("dilations", [1] * k))

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        blocks = factorization(rng, x[2], k)  # sliding blocks per spatial dim
        img = [(n - 1) * s + 1 + d * (b - 1) - p0 - p1 for n, s, d, b, p0, p1 in
               zip(blocks, strides, dil, block, pads[:k], pads[k:])]
        return np.array(img, np.int64).reshape(shape)
    return [r.need(f"an image with {x[2]} sliding blocks", lo=1, draw=draw)]


@rule(("Pad", 1))
def _pads(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    if data is None:
        return []
    k = _length(r) // 2
    axes: Any = r.input_value(3)
    if axes is None:
        axes = range(len(data)) if k == len(data) else None
    mode = _str(r, "mode", "constant")
    limit = (lambda d: d) if mode in ("reflect", "wrap") else (lambda d: SMALL)
    if axes is None:
        per = [min(limit(d) for d in data)] * k if data else [1] * k
    else:
        per = [limit(data[int(a) % len(data)]) for a in np.ravel(axes)]
    if mode == "reflect":  # ONNX Runtime reflects only axes of length >= 2
        per = [p if p >= 2 else 1 for p in per]
    hi = np.maximum(np.array(per + per, np.int64), 1)
    return [r.need("pads", lo=0, hi=hi)]


# ---- scales and thresholds ----------------------------------------------------------------------

def _scaled_axes(r: Reader, rank: int, k: int) -> list[bool]:
    """Per entry of a Resize scales / sizes input: is the axis one that may change (the two
    innermost; ONNX Runtime's linear and cubic modes scale no others)."""
    axes = [int(a) % rank for a in r.attrs.get("axes", range(rank))]
    return [a >= rank - 2 for a in axes][:k]


@rule(("Resize", 2), ("Upsample", 1))
def _scales(r: Reader) -> list[Need]:
    rank = r.input_rank(0)
    k = _length(r)
    if not rank or k == 0:
        return []
    moving = _scaled_axes(r, rank, k)
    choices = SCALE_CHOICES if r.op_type == "Resize" else (2.0, 3.0)  # Upsample: >= 1

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return np.array([rng.choice(choices) if m else 1.0 for m in moving]).reshape(shape)
    return [r.need("scales", lo=0.0, draw=draw)]


@rule(("Resize", 3))
def _sizes(r: Reader) -> list[Need]:
    data = r.input_shape(0)
    k = _length(r)
    if not data or k == 0:
        return []
    axes = [int(a) % len(data) for a in r.attrs.get("axes", range(len(data)))][:k]
    moving = _scaled_axes(r, len(data), k)

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return np.array([int(rng.integers(1, 2 * data[a] + 1)) if m else data[a]
                         for a, m in zip(axes, moving)], np.int64).reshape(shape)
    return [r.need("output sizes", lo=1, draw=draw)]


@rule(("Resize", 1))
def _roi(r: Reader) -> list[Need]:
    k = _length(r) // 2
    return [r.need("region of interest", lo=np.array([0.0] * k + [0.6] * k),
                   hi=np.array([0.4] * k + [1.0] * k))]


@rule(("NonMaxSuppression", 2))
def _max_boxes(r: Reader) -> list[Need]:
    return [r.need("max boxes per class", lo=0, hi=6)]


@rule(("NonMaxSuppression", 3))
def _iou_threshold(r: Reader) -> list[Need]:
    return [r.need("IoU threshold", lo=0.0, hi=1.0)]


@rule(("NonMaxSuppression", 4))
def _score_threshold(r: Reader) -> list[Need]:
    return [r.need("score threshold", lo=-1.0, hi=1.0)]


@rule(("Dropout", 1))
def _dropout_ratio(r: Reader) -> list[Need]:
    return [r.need("ratio", lo=0.0, hi=0.9)]


@rule(("Dropout", 2))
def _dropout_training(r: Reader) -> list[Need]:
    # training mode draws a random mask: the original and the optimized run could not agree
    return [r.need("training mode (off: the output is random in training)",
                   draw=lambda rng, shape: np.zeros(shape, np.bool_))]
