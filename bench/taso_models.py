"""TASO's benchmark model family, built directly in graphopt IR.

The structures follow TASO's example scripts (BERT, NasRNN, ResNeXt-50, NasNet-A, Inception-v3,
SqueezeNet, ResNet-50); TASO's ``conv2d(activation="RELU")`` is a ``conv`` followed by ``relu``
here, and TASO's BERT, which feeds the block input to its final linear layer, uses the attention
output instead and has the softmax TASO's op set lacked (without it, eight blocks of cubic
growth overflow float32). Weights are seeded random constants. Every builder takes size knobs so tests
can build tiny versions; the defaults are TASO's shapes.

    python -m bench.taso_models            # print node counts of the full-size family
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType


class Builder:
    """Seeded weights and the layers TASO's scripts use."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.inputs: list = []

    def input(self, name: str, *shape: int) -> Value:
        n = input_node(name, TensorType(tuple(shape), DType.f32))
        self.inputs.append(n)
        return n.out

    def weight(self, *shape: int, scale: float | None = None) -> Value:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return constant(self.rng.standard_normal(shape).astype(np.float32) * np.float32(s))

    def conv(self, x: Value, cout: int, k: "int | tuple[int, int]", stride: int = 1,
             groups: int = 1, relu: bool = False, bias: bool = False) -> Value:
        kh, kw = (k, k) if isinstance(k, int) else k
        cin = x.type.shape[1]
        w = self.weight(cout, cin // groups, kh, kw)
        pads = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)  # TASO's padding="SAME"
        ins = [x, w] + ([self.weight(cout, scale=0.1)] if bias else [])
        y = op("conv", *ins, strides=(stride, stride), pads=pads, dilations=(1, 1),
               group=groups)
        return op("relu", y) if relu else y

    def pool(self, x: Value, kind: str, k: int, stride: int, same: bool = True) -> Value:
        p = (k - 1) // 2 if same else 0
        extra = {"count_include_pad": False} if kind == "avg_pool" else {}
        return op(kind, x, kernel=(k, k), strides=(stride, stride), pads=(p, p, p, p),
                  dilations=(1, 1), ceil_mode=False, **extra)

    def graph(self, outputs: list[Value], name: str) -> Graph:
        return Graph(self.inputs, outputs, [f"out{i}" for i in range(len(outputs))], name=name)


# ---- BERT (TASO examples/bert.py: seq 64, hidden 1024, 16 heads, 8 attention blocks) ------------

def bert(seq: int = 64, hidden: int = 1024, heads: int = 16, layers: int = 8,
         seed: int = 0) -> Graph:
    b = Builder(seed)
    x = op("relu", b.input("x", seq, hidden))
    dk = hidden // heads
    for _ in range(layers):
        q = op("matmul", x, b.weight(hidden, hidden))
        k = op("matmul", x, b.weight(hidden, hidden))
        v = op("matmul", x, b.weight(hidden, hidden))
        q = op("transpose", op("reshape", q, shape=(seq, heads, dk)), perm=(1, 0, 2))
        k = op("transpose", op("reshape", k, shape=(seq, heads, dk)), perm=(1, 2, 0))
        v = op("transpose", op("reshape", v, shape=(seq, heads, dk)), perm=(1, 0, 2))
        logits = op("softmax", op("matmul", q, k), axis=2)
        o = op("matmul", logits, v)
        o = op("reshape", op("transpose", o, perm=(1, 0, 2)), shape=(seq, hidden))
        x = op("matmul", o, b.weight(hidden, hidden))
    return b.graph([x], "bert")


# ---- NasRNN (TASO examples/nasrnn.py: hidden 512, 5 steps) ------------------------------------

def nasrnn(hidden: int = 512, length: int = 5, seed: int = 0) -> Graph:
    b = Builder(seed)
    xs = [b.input(f"x{i}", 1, hidden) for i in range(length)]
    state = b.weight(1, hidden, scale=0.5)

    def combine(x: Value, h: Value) -> Value:
        return op("add", op("matmul", x, b.weight(hidden, hidden)),
                  op("matmul", h, b.weight(hidden, hidden)))

    def cell(h: Value, x: Value) -> Value:
        t = [combine(x, h) for _ in range(8)]
        m0 = op("add", op("relu", t[0]), op("sigmoid", t[3]))
        m1 = op("add", op("sigmoid", t[1]), op("tanh", t[2]))
        m2 = op("mul", op("sigmoid", t[4]), op("tanh", t[5]))
        m3 = op("mul", op("sigmoid", t[6]), op("relu", t[7]))
        m4 = op("add", op("sigmoid", m1), op("tanh", m2))
        m5 = op("mul", op("tanh", m0), op("tanh", m3))
        m6 = op("mul", op("tanh", m4), op("tanh", m5))
        return op("tanh", m6)

    for x in xs:
        state = cell(state, x)
    return b.graph([state], "nasrnn")


# ---- ResNeXt-50 (TASO examples/resnext50.py: 32 groups, input 1x64x56x56 after the stem) -------

def resnext50(width: int = 128, size: int = 56, groups: int = 32,
              blocks: tuple[int, ...] = (3, 4, 6, 3), seed: int = 0) -> Graph:
    b = Builder(seed)
    t = b.input("x", 1, 64, size, size)

    def block(x: Value, stride: int, c: int) -> Value:
        y = b.conv(x, c, 1, relu=True)
        y = b.conv(y, c, 3, stride=stride, groups=groups, relu=True)
        y = b.conv(y, 2 * c, 1)
        if stride > 1 or x.type.shape[1] != 2 * c:
            x = b.conv(x, 2 * c, 1, stride=stride, relu=True)
        return op("relu", op("add", x, y))

    c = width
    for i, n in enumerate(blocks):
        for j in range(n):
            t = block(t, 2 if (j == 0 and i > 0) else 1, c)
        c *= 2
    return b.graph([t], "resnext50")


# ---- ResNet-50 (bottleneck blocks, input 1x64x56x56 after the stem) ------------------------------

def resnet50(width: int = 64, size: int = 56, blocks: tuple[int, ...] = (3, 4, 6, 3),
             seed: int = 0) -> Graph:
    b = Builder(seed)
    t = b.input("x", 1, 64, size, size)

    def block(x: Value, stride: int, c: int) -> Value:
        y = b.conv(x, c, 1, relu=True, bias=True)
        y = b.conv(y, c, 3, stride=stride, relu=True, bias=True)
        y = b.conv(y, 4 * c, 1, bias=True)
        if stride > 1 or x.type.shape[1] != 4 * c:
            x = b.conv(x, 4 * c, 1, stride=stride, bias=True)
        return op("relu", op("add", x, y))

    c = width
    for i, n in enumerate(blocks):
        for j in range(n):
            t = block(t, 2 if (j == 0 and i > 0) else 1, c)
        c *= 2
    return b.graph([t], "resnet50")


# ---- SqueezeNet 1.0 (fire modules; input 1x3x224x224) -----------------------------------------

def squeezenet(size: int = 224, scale: int = 1, seed: int = 0) -> Graph:
    b = Builder(seed)
    x = b.input("x", 1, 3, size, size)

    def fire(x: Value, s: int, e1: int, e3: int) -> Value:
        sq = b.conv(x, s // scale, 1, relu=True, bias=True)
        a = b.conv(sq, e1 // scale, 1, relu=True, bias=True)
        c = b.conv(sq, e3 // scale, 3, relu=True, bias=True)
        return op("concat", a, c, axis=1)

    t = b.conv(x, 96 // scale, 7, stride=2, relu=True, bias=True)
    t = b.pool(t, "max_pool", 3, 2, same=False)
    t = fire(t, 16, 64, 64)
    t = fire(t, 16, 64, 64)
    t = fire(t, 32, 128, 128)
    t = b.pool(t, "max_pool", 3, 2, same=False)
    t = fire(t, 32, 128, 128)
    t = fire(t, 48, 192, 192)
    t = fire(t, 48, 192, 192)
    t = fire(t, 64, 256, 256)
    t = b.pool(t, "max_pool", 3, 2, same=False)
    t = fire(t, 64, 256, 256)
    t = b.conv(t, 1000 // scale, 1, relu=True, bias=True)
    t = op("reduce_mean", t, axes=(2, 3), keepdims=True)
    return b.graph([t], "squeezenet")


# ---- Inception-v3 (TASO examples/inceptionv3.py; input 1x3x299x299) ----------------------------

def inception_v3(size: int = 299, scale: int = 1, seed: int = 0) -> Graph:
    b = Builder(seed)
    x = b.input("x", 1, 3, size, size)

    def c(x: Value, n: int, k: "int | tuple[int, int]", stride: int = 1) -> Value:
        return b.conv(x, max(n // scale, 1), k, stride=stride, relu=True)

    def block_a(x: Value, pool_c: int) -> Value:
        t1 = c(x, 64, 1)
        t2 = c(c(x, 48, 1), 64, 5)
        t3 = c(c(c(x, 64, 1), 96, 3), 96, 3)
        t4 = c(b.pool(x, "avg_pool", 3, 1), pool_c, 1)
        return op("concat", t1, t2, t3, t4, axis=1)

    def block_b(x: Value) -> Value:
        t1 = c(x, 384, 3, 2)
        t2 = c(c(c(x, 64, 1), 96, 3), 96, 3, 2)
        t3 = b.pool(x, "max_pool", 3, 2)
        return op("concat", t1, t2, t3, axis=1)

    def block_c(x: Value, ch: int) -> Value:
        t1 = c(x, 192, 1)
        t2 = c(c(c(x, ch, 1), ch, (1, 7)), 192, (7, 1))
        t3 = c(c(c(c(c(x, ch, 1), ch, (7, 1)), ch, (1, 7)), ch, (7, 1)), 192, (1, 7))
        t4 = c(b.pool(x, "avg_pool", 3, 1), 192, 1)
        return op("concat", t1, t2, t3, t4, axis=1)

    def block_d(x: Value) -> Value:
        t1 = c(c(x, 192, 1), 320, 3, 2)
        t2 = c(c(c(c(x, 192, 1), 192, (1, 7)), 192, (7, 1)), 192, 3, 2)
        t3 = b.pool(x, "max_pool", 3, 2)
        return op("concat", t1, t2, t3, axis=1)

    def block_e(x: Value) -> Value:
        t1 = c(x, 320, 1)
        t2i = c(x, 384, 1)
        t2 = op("concat", c(t2i, 384, (1, 3)), c(t2i, 384, (3, 1)), axis=1)
        t3i = c(c(x, 448, 1), 384, 3)
        t3 = op("concat", c(t3i, 384, (1, 3)), c(t3i, 384, (3, 1)), axis=1)
        t4 = c(b.pool(x, "avg_pool", 3, 1), 192, 1)
        return op("concat", t1, t2, t3, t4, axis=1)

    t = c(x, 32, 3, 2)
    t = c(t, 32, 3)
    t = c(t, 64, 3)
    t = b.pool(t, "max_pool", 3, 2)
    t = c(t, 80, 1)
    t = c(t, 192, 3)
    t = b.pool(t, "max_pool", 3, 2)
    t = block_a(t, 32)
    t = block_a(t, 64)
    t = block_a(t, 64)
    t = block_b(t)
    t = block_c(t, 128)
    t = block_c(t, 160)
    t = block_c(t, 160)
    t = block_c(t, 192)
    t = block_d(t)
    t = block_e(t)
    t = block_e(t)
    t = op("reduce_mean", t, axes=(2, 3), keepdims=True)
    return b.graph([t], "inception_v3")


# ---- NasNet-A (TASO examples/nasnet_a.py: normal and reduction cells of separable convs) ----------

def nasnet_a(size: int = 56, channels: int = 64, repeats: int = 4, seed: int = 0) -> Graph:
    b = Builder(seed)
    x = b.input("x", 1, channels, size, size)

    def sep(x: Value, k: int, stride: int = 1) -> Value:
        ch = x.type.shape[1]
        y = b.conv(op("relu", x), ch, k, stride=stride, groups=ch)  # depthwise
        return b.conv(y, ch, 1)  # pointwise

    def fit(x: Value, like: Value) -> Value:
        """1x1 conv (stride 2 when the size halves) to match ``like``'s channels and size."""
        s = x.type.shape[2] // like.type.shape[2]
        return b.conv(op("relu", x), like.type.shape[1], 1, stride=max(s, 1))

    def normal(prev: Value, cur: Value) -> Value:
        prev = fit(prev, cur)
        outs = [
            op("add", sep(cur, 3), cur),
            op("add", sep(prev, 3), sep(cur, 5)),
            op("add", b.pool(cur, "avg_pool", 3, 1), prev),
            op("add", b.pool(prev, "avg_pool", 3, 1), b.pool(prev, "avg_pool", 3, 1)),
            op("add", sep(prev, 5), sep(prev, 3)),
        ]
        cat = op("concat", *outs, axis=1)
        return b.conv(op("relu", cat), cur.type.shape[1], 1)

    def reduction(prev: Value, cur: Value) -> Value:
        prev = fit(prev, cur)
        c1 = op("add", sep(prev, 7, 2), sep(cur, 5, 2))
        c2 = op("add", b.pool(cur, "max_pool", 3, 2), sep(prev, 7, 2))
        c3 = op("add", b.pool(cur, "avg_pool", 3, 2), sep(prev, 5, 2))
        c4 = op("add", b.pool(c1, "max_pool", 3, 1), sep(c1, 3))
        c5 = op("add", b.pool(c1, "avg_pool", 3, 1), c2)
        cat = op("concat", c2, c3, c4, c5, axis=1)
        return b.conv(op("relu", cat), 2 * cur.type.shape[1], 1)

    prev, cur = x, x
    for stage in range(2):
        for _ in range(repeats):
            prev, cur = cur, normal(prev, cur)
        if stage == 0:
            prev, cur = cur, reduction(prev, cur)
    return b.graph([cur], "nasnet_a")


# Tensat's speedups over the original graphs (T4 GPU, TASO's cost model), for the bench tables
TENSAT_SPEEDUP = {"nasrnn": 0.69, "squeezenet": 0.25, "inception_v3": 0.10, "bert": 0.09,
                  "resnext50": 0.09, "nasnet_a": 0.07}

MODELS: dict[str, Callable[..., Graph]] = {
    "bert": bert, "nasrnn": nasrnn, "resnext50": resnext50, "nasnet_a": nasnet_a,
    "inception_v3": inception_v3, "squeezenet": squeezenet, "resnet50": resnet50,
}

# tiny versions for tests (same structure, small dims)
TINY: dict[str, Callable[[], Graph]] = {
    "bert": lambda: bert(seq=8, hidden=32, heads=4, layers=2),
    "nasrnn": lambda: nasrnn(hidden=16, length=2),
    "resnext50": lambda: resnext50(width=8, size=8, groups=4, blocks=(1, 1)),
    "nasnet_a": lambda: nasnet_a(size=8, channels=8, repeats=1),
    "inception_v3": lambda: inception_v3(size=75, scale=16),
    "squeezenet": lambda: squeezenet(size=48, scale=16),
    "resnet50": lambda: resnet50(width=4, size=8, blocks=(1, 1)),
}


def main() -> None:
    for name, fn in MODELS.items():
        g = fn()
        ops = sum(1 for n in g.nodes if n.op not in ("input", "constant"))
        print(f"{name:14s} {ops:5d} ops  {g.op_counts()}")


if __name__ == "__main__":
    main()
