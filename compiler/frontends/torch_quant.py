"""The torch callable's fast path: lowered quantized linears as fused torch kernels, the other
nodes by their ``torch`` aspect with little per-node overhead.

``build_plan(g, const_names)`` turns a graph into a ``Plan`` the ``GraphModule`` of
``frontends.torch_export`` runs instead of the interpreter's node walk. It recognizes the
quantized linears ``passes/quant_lowering.py`` writes (``[bias]``: an optional add of a constant
``[N]`` that does not change the shape; mul operands in either order):

* per-tensor (``int8``, the default activations)::

      q, sa, za = dynamic_quantize_linear(x)                       x: f32 [..., K]
      y = mul(cast(matmul_integer(q, Wq, za, zw), f32), mul(sa, sw))  [+ bias]

  Wq a constant int8 [K, N], zw constant zeros, sw a constant f32 [N] or scalar. Run as ONE
  ``torch.ops.quantized.linear_dynamic(x, W)``, W prepacked once at build time
  (``linear_prepack`` of the per-channel qint8 tensor (Wq^T, sw) and the bias): torch's
  integer GEMM (fbgemm / oneDNN) with its own activation quantization. The math is the same up
  to the rounding of the activation codes: torch maps the same range [min(0, min x),
  max(0, max x)] onto u8 but computes the scale, zero point and codes with its own float
  rounding, so some codes differ by one from ``dynamic_quantize_linear``'s (on BERT-base 4L the
  output differs from the node-by-node one at 42 dB SQNR, as ONNX Runtime's does at 40 dB); it
  quantizes to 7 bits (``reduce_range``) where its u8 x s8 pair sums would saturate int16 on
  this CPU (probed once per quantized engine: ``needs_reduce_range``).

* per-token (``int8`` with ``activations="per-token"``, the regular columns of ``llm-int8``)::

      s = maximum(div(reduce_max(abs(x), axes=(-1,), keepdims), c), tiny)    c <= 127
      q = cast(add(round(div(x, s)), 128), u8)
      y = mul(mul(cast(matmul_integer(q, Wq, 128, 0), f32), s), sw)  [+ bias]

  The activation quantizer runs once per x (shared by every linear reading its codes) and keeps
  the codes as int8 (``round(x / s)``, which is ``q - 128``); each linear is then
  ``torch._int_mm(codes, Wq)`` (exact int32) scaled as the graph scales it, so the result is
  the node-by-node one bit for bit, with ~10 fewer ops per linear and no per-call correction
  sums over the weight.

Every other ``matmul_integer`` runs node by node; ``Plan.fallbacks`` says why (a static
activation scale, nonzero weight zero points, an intermediate value read elsewhere, a kernel
torch cannot build here, ...). A fused kernel's intermediate values are not computed at all
unless another node reads them (the plan drops the steps whose values nothing needs).

The rest of the plan is the interpreter's walk with its per-node overhead cut: values in a
list by slot instead of a dict keyed by (node id, index), each op's ``torch`` aspect bound
once, constants read from the module's buffers once per run (so they follow ``.to()``), the
values each step is the last reader of dropped after it. Semantics are the interpreter's; an
error in a step is re-raised by the interpreter's ``run_node`` so it names the node as before.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import DType, TensorType

Key = tuple[int, int]  # (id(node), output index), as the interpreter's Env
MAX_TOKEN_DIVISOR = 127.0  # per-token codes round(x / (max|x| / c)) fit int8 for c <= 127


def _key(v: Value) -> Key:
    return (id(v.node), v.index)


# ---- recognizing the regions ---------------------------------------------------------------------

class Readers:
    """The readers of every value of a graph (``None`` stands for a graph output)."""

    def __init__(self, g: Graph) -> None:
        self.of: dict[Key, list[Node | None]] = {}
        for n in g.nodes:
            for v in n.inputs:
                self.of.setdefault(_key(v), []).append(n)
        for v in g.outputs:
            self.of.setdefault(_key(v), []).append(None)

    def only(self, v: Value) -> Node | None:
        """The one node reading ``v``; None when several (or none) read it or it is an output."""
        r = self.of.get(_key(v), [])
        return r[0] if len(r) == 1 else None


def _const(v: Value) -> np.ndarray | None:
    n = v.node
    return np.asarray(n.const.array) if n.op == "constant" and n.const.has_array else None


def _scalar_const(v: Value) -> float | None:
    a = _const(v)
    return float(a) if a is not None and a.ndim == 0 else None


def _other(n: Node, v: Value) -> Value | None:
    """The other input of binary ``n`` reading ``v``."""
    a, b = n.inputs
    return b if a == v else a if b == v else None


def _shape(v: Value) -> tuple[Any, ...] | None:
    t = v.type
    return t.shape if isinstance(t, TensorType) else None


def _is(v: Value, op: str, dtype: DType | None = None) -> bool:
    t = v.type
    return v.node.op == op and (dtype is None or (isinstance(t, TensorType) and t.dtype == dtype))


@dataclass(frozen=True)
class TokenQuant:
    """The per-token activation quantizer: scales ``s`` (one per row of x) and codes."""

    x: Value
    scale: Value  # the maximum node's output
    codes: Node  # the cast to u8
    divisor: float
    tiny: float


@dataclass(frozen=True)
class QuantLinear:
    """A lowered quantized linear a fused kernel runs: the value of ``root`` from ``x`` (per
    tensor) or from the per-token quantizer ``act``."""

    form: str  # "per-tensor" | "per-token"
    matmul: Node  # the matmul_integer
    root: Node  # the node whose value the kernel computes
    x: Value
    weight: np.ndarray  # int8 [K, N]
    w_scale: np.ndarray  # f32 [N]
    bias: np.ndarray | None  # f32 [N]
    act: TokenQuant | None = None
    kernel: str = ""  # the torch kernel running it, once the plan has built one

    def __str__(self) -> str:
        k, n = self.weight.shape
        bias = " + bias" if self.bias is not None else ""
        by = f" -> {self.kernel}" if self.kernel else ""
        return f"{self.matmul.where}: {self.form} int8 linear [{k}, {n}]{bias}{by}"


@dataclass(frozen=True)
class Fallback:
    """A matmul_integer left to run node by node, and why."""

    node: Node
    reason: str

    def __str__(self) -> str:
        return f"{self.node.where}: {self.reason}"


def find_quant_linears(g: Graph) -> tuple[list[QuantLinear], list[Fallback]]:
    """The lowered quantized linears of ``g`` the fused kernels can run, and every other
    matmul_integer with the reason it runs node by node."""
    readers = Readers(g)
    found: list[QuantLinear] = []
    left: list[Fallback] = []
    acts: dict[int, TokenQuant | str] = {}
    for n in g.nodes:
        if n.op != "matmul_integer":
            continue
        r = _match_linear(n, readers, acts)
        (found if isinstance(r, QuantLinear) else left).append(
            r if isinstance(r, QuantLinear) else Fallback(n, r))
    return found, left


def _match_linear(mi: Node, readers: Readers, acts: dict[int, TokenQuant | str]
                  ) -> QuantLinear | str:
    a, b, za, zb = mi.inputs
    w = _const(b)
    if w is None or w.dtype != np.int8 or w.ndim != 2:
        return "weight codes are not a constant int8 [K, N]"
    zw = _const(zb)
    if zw is None or np.any(zw != 0):
        return "weight zero points are not constant zeros (the kernels take symmetric weights)"
    if _shape(a) is None or len(_shape(a) or ()) < 1:
        return "activation codes of unknown rank"
    cast = readers.only(mi.out)
    if cast is None or cast.op != "cast" or cast.attrs["to"] != DType.f32:
        return "the int32 accumulator is not read by one cast to f32 only"
    r = _only_mul(readers, cast.out, "the cast accumulator")
    if isinstance(r, str):
        return r
    m1, scale = r
    n_out = int(w.shape[1])
    if _is(a, "dynamic_quantize_linear"):
        d = a.node
        if za != Value(d, 2):
            return "activation zero point is not dynamic_quantize_linear's"
        sw = _weight_scale(scale, Value(d, 1), n_out)
        if isinstance(sw, str):
            return sw
        return _with_bias(mi, m1, readers, "per-tensor", d.inputs[0], w, sw, None)
    if not _is(a, "cast", DType.u8):
        return ("activation codes come neither from dynamic_quantize_linear nor from the "
                "per-token quantizer (e.g. a static quantize_linear)")
    act = acts.get(id(a.node))
    if act is None:
        act = acts[id(a.node)] = _match_token_quant(a.node)
    if isinstance(act, str):
        return act
    if scale != act.scale:
        return "the accumulator is not scaled by the per-token scales first"
    if _scalar_const(za) != 128.0:
        return "activation zero point is not 128"
    r = _only_mul(readers, m1.out, "the row-scaled accumulator")
    if isinstance(r, str):
        return r
    m2, wsc = r
    sw = _scale_vector(wsc, n_out)
    if isinstance(sw, str):
        return sw
    return _with_bias(mi, m2, readers, "per-token", act.x, w, sw, act)


def _only_mul(readers: Readers, v: Value, what: str) -> tuple[Node, Value] | str:
    """The one mul reading ``v`` and its other operand."""
    m = readers.only(v)
    other = _other(m, v) if m is not None and m.op == "mul" else None
    if m is None or other is None:
        return f"{what} is not read by one mul only"
    return m, other


def _scale_vector(v: Value, n: int) -> np.ndarray | str:
    """A constant f32 weight scale, scalar or [N], as [N]."""
    s = _const(v)
    if s is None or s.dtype != np.float32 or s.shape not in ((), (n,)):
        return "weight scale is not a constant f32 scalar or [N]"
    return np.array(np.broadcast_to(s, (n,)), dtype=np.float32)


def _weight_scale(s: Value, act_scale: Value, n: int) -> np.ndarray | str:
    """sw of ``mul(act_scale, sw)`` (either order)."""
    if s.node.op != "mul":
        return "the accumulator's scale is not mul(activation scale, weight scale)"
    sw = _other(s.node, act_scale)
    if sw is None:
        return "the accumulator's scale does not read the activation scale"
    return _scale_vector(sw, n)


def _with_bias(mi: Node, y: Node, readers: Readers, form: str, x: Value, w: np.ndarray,
               sw: np.ndarray, act: TokenQuant | None) -> QuantLinear | str:
    """The linear ending at ``y``, or at the add of a constant bias reading it."""
    xt = x.type
    if not isinstance(xt, TensorType) or xt.dtype != DType.f32:
        return "activations are not f32"
    if _shape(y.out) != _shape(mi.out):
        return "the scaled accumulator is broadcast to another shape"
    root, bias = y, None
    add = readers.only(y.out)
    if add is not None and add.op == "add":
        c = _const(_other(add, y.out))  # type: ignore[arg-type]
        n = w.shape[1]
        if c is not None and c.dtype == np.float32 and _shape(add.out) == _shape(y.out) and \
                c.size in (1, n) and c.ndim <= len(_shape(y.out) or ()) and \
                (c.ndim == 0 or c.shape[-1] == c.size):
            root, bias = add, np.array(np.broadcast_to(c.reshape(-1), (n,)), np.float32)
    return QuantLinear(form, mi, root, x, w, sw, bias, act)


def _match_token_quant(codes: Node) -> TokenQuant | str:
    """The per-token quantizer ending at ``codes`` (cast to u8), as passes/quantize.py builds
    it; a reason when it is something else."""
    bad = "activation codes are not the per-token quantizer's"
    add = codes.inputs[0].node
    if add.op != "add":
        return bad
    rnd = next((v for v in add.inputs if v.node.op == "round"), None)
    if rnd is None or _scalar_const(_other(add, rnd)) != 128.0:  # type: ignore[arg-type]
        return bad
    div = rnd.node.inputs[0].node
    if div.op != "div":
        return bad
    x, s = div.inputs
    if s.node.op != "maximum":
        return bad
    amax_div = next((v for v in s.node.inputs if v.node.op == "div"), None)
    tiny = _scalar_const(_other(s.node, amax_div)) if amax_div is not None else None
    if amax_div is None or tiny is None:
        return bad
    amax, c = amax_div.node.inputs
    divisor = _scalar_const(c)
    rank = len(_shape(x) or ())
    red = amax.node
    if divisor is None or red.op != "reduce_max" or not red.attrs.get("keepdims") or \
            tuple(red.attrs.get("axes") or ()) != (rank - 1,) or \
            red.inputs[0].node.op != "abs" or red.inputs[0].node.inputs[0] != x:
        return bad
    if not 0.0 < divisor <= MAX_TOKEN_DIVISOR:
        return f"per-token codes may not fit int8 (max |x| / {divisor})"
    return TokenQuant(x, s, codes, divisor, tiny)


# ---- the kernels --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def needs_reduce_range(engine: str) -> bool:
    """Whether torch's dynamic int8 linear (quantized engine ``engine``) must quantize the
    activations to 7 bits on this CPU: without VNNI, fbgemm sums pairs of u8 x s8 products in
    int16, which saturates for full-range codes. Probed: x = 1 (codes 255) times weights 1
    (codes 127) over K = 64 must give 64."""
    import torch

    k = 64
    w = _packed(np.full((k, 4), 127, np.int8), np.full(4, 1 / 127, np.float32), None)
    y = torch.ops.quantized.linear_dynamic(torch.ones(4, k), w, False)
    return bool((y - k).abs().max() > 0.5)


def _packed(wq: np.ndarray, sw: np.ndarray, bias: np.ndarray | None) -> Any:
    """``linear_prepack`` of the per-channel qint8 weight (wq [K, N] transposed, scales sw)."""
    import torch

    n = wq.shape[1]
    w = torch.from_numpy(np.ascontiguousarray(wq.T))
    scale = torch.from_numpy(sw.astype(np.float64))
    with warnings.catch_warnings():  # quantized tensors are deprecated; the kernels still take them
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(w, scale, torch.zeros(n, dtype=torch.int64),
                                                      0)
        b = None if bias is None else torch.from_numpy(bias.astype(np.float32))
        return torch.ops.quantized.linear_prepack(qw, b)


class DynamicLinear:
    """y = linear_dynamic(x, W): torch's fused dynamic int8 linear (per-tensor u8 activations
    quantized inside, per-channel int8 weights prepacked once, bias added in float)."""

    def __init__(self, q: QuantLinear) -> None:
        import torch

        self.engine = torch.backends.quantized.engine
        self.reduce_range = needs_reduce_range(self.engine)
        self.packed = _packed(q.weight, q.w_scale, q.bias)
        self.k, self.n = (int(d) for d in q.weight.shape)
        self.kernel = (f"quantized.linear_dynamic ({self.engine}"
                       f"{', reduce_range' if self.reduce_range else ''})")
        self.op = torch.ops.quantized.linear_dynamic

    def __call__(self, args: Sequence[Any], attrs: Any = None) -> tuple[Any, ...]:
        x = args[0]
        if x.dim() == 2:
            return (self.op(x, self.packed, self.reduce_range),)
        y = self.op(x.reshape(-1, self.k), self.packed, self.reduce_range)
        return (y.reshape(*x.shape[:-1], self.n),)


class TokenCodes:
    """The per-token quantizer: (scales s, int8 codes round(x / s)) with the graph's ops."""

    kernel = "per-token int8 codes"

    def __init__(self, t: TokenQuant) -> None:
        import torch

        self.divisor = torch.tensor(t.divisor, dtype=torch.float32)
        self.tiny = torch.tensor(t.tiny, dtype=torch.float32)

    def __call__(self, args: Sequence[Any], attrs: Any = None) -> tuple[Any, ...]:
        import torch

        x = args[0]
        s = torch.maximum(torch.amax(torch.abs(x), dim=-1, keepdim=True).div_(self.divisor),
                          self.tiny)
        return (s, torch.div(x, s).round_().to(torch.int8))


class TokenLinear:
    """y = cast(codes @ Wq) * s * sw [+ bias] with torch._int_mm (exact int32)."""

    kernel = "torch._int_mm"

    def __init__(self, q: QuantLinear) -> None:
        import torch

        self.w = torch.from_numpy(np.array(q.weight, np.int8))
        self.sw = torch.from_numpy(q.w_scale)
        self.bias = None if q.bias is None else torch.from_numpy(q.bias)
        self.k, self.n = (int(d) for d in q.weight.shape)

    def __call__(self, args: Sequence[Any], attrs: Any = None) -> tuple[Any, ...]:
        import torch

        s, codes = args
        acc = torch._int_mm(codes.reshape(-1, self.k), self.w)
        y = acc.reshape(*codes.shape[:-1], self.n).to(torch.float32).mul_(s).mul_(self.sw)
        return (y if self.bias is None else y.add_(self.bias),)


# ---- the plan -----------------------------------------------------------------------------------

@dataclass
class _Step:
    fn: Callable[[Sequence[Any], Any], Sequence[Any]]
    attrs: Any
    ins: tuple[Key, ...]
    outs: tuple[Key, ...]
    node: Node | None  # a graph node run by its torch aspect; None for a fused kernel
    what: str = ""  # a fused kernel's description (errors)
    where: str = ""


class Plan:
    """The steps the torch callable runs for its graph (see the module docstring)."""

    def __init__(self, g: Graph, const_names: dict[int, str], fuse: bool = True) -> None:
        from ..ops.registry import get_op

        self.graph = g
        self.regions: list[QuantLinear] = []  # the fused ones, with their kernels
        self.fallbacks: list[Fallback] = []
        self.runs = 0  # how many times the plan ran (the fused path is taken when it grows)
        fused: dict[int, _Step] = {}  # id(node) -> the fused step placed at that node
        if fuse:
            fused = self._fuse(g)
        steps: list[_Step] = []
        consts: list[tuple[Key, str]] = []
        for n in g.nodes:
            if id(n) in fused:  # the kernel computes this node's value
                steps.append(fused[id(n)])
                continue
            if n.op == "input":
                continue
            if n.op == "constant":
                consts.append(((id(n), 0), const_names[id(n)]))
                continue
            steps.append(_Step(get_op(n.op).torch, n.attrs, tuple(_key(v) for v in n.inputs),
                               tuple((id(n), i) for i in range(len(n.out_types))), n))
        self._layout(g, steps, consts)

    def _fuse(self, g: Graph) -> dict[int, _Step]:
        """Kernels for the recognized quantized linears, each placed at the node it replaces
        (the per-token quantizer at its maximum node, whose scales it also computes)."""
        linears, self.fallbacks = find_quant_linears(g)
        out: dict[int, _Step] = {}
        codes: dict[int, Key] = {}
        for q in linears:
            try:
                if q.form == "per-tensor":
                    k: Any = DynamicLinear(q)
                    ins = (_key(q.x),)
                else:
                    assert q.act is not None
                    k = TokenLinear(q)
                    s_node = q.act.scale.node
                    placed = out.get(id(s_node))
                    if placed is not None and codes.get(id(q.act.codes)) not in placed.outs:
                        raise ValueError("another quantizer's codes share these scales")
                    if id(q.act.codes) not in codes:
                        codes[id(q.act.codes)] = (id(q.act.codes), -1)  # a slot of its own
                        out[id(s_node)] = _Step(TokenCodes(q.act), None, (_key(q.act.x),),
                                                (_key(q.act.scale), codes[id(q.act.codes)]),
                                                None, TokenCodes.kernel, s_node.where)
                    ins = (_key(q.act.scale), codes[id(q.act.codes)])
            except Exception as e:  # noqa: BLE001 - the kernel cannot be built here
                msg = " ".join(str(e).split())[:200]
                self.fallbacks.append(Fallback(q.matmul, f"the fused kernel cannot be built "
                                                         f"here: {type(e).__name__}: {msg}"))
                continue
            region = replace(q, kernel=k.kernel)
            self.regions.append(region)
            out[id(q.root)] = _Step(k, None, ins, ((id(q.root), 0),), None, str(region),
                                    q.root.where)
        return out

    def _layout(self, g: Graph, steps: list[_Step], consts: list[tuple[Key, str]]) -> None:
        """Drop the steps nothing needs, give every value a slot, and note after which step
        each value dies."""
        need = {_key(v) for v in g.outputs}
        kept: list[_Step] = []
        for st in reversed(steps):
            if any(o in need for o in st.outs):
                kept.append(st)
                need.update(st.ins)
        kept.reverse()
        slot: dict[Key, int] = {}

        def at(k: Key) -> int:
            return slot.setdefault(k, len(slot))

        self.inputs = [(at((id(n), 0)), (id(n), 0)) for n in g.inputs]
        self.consts = [(at(k), name) for k, name in consts if k in need]
        last: dict[int, int] = {}
        for i, st in enumerate(kept):
            for k in st.ins:
                last[at(k)] = i
            for k in st.outs:
                at(k)
        outs = {slot[_key(v)] for v in g.outputs}
        dies: list[list[int]] = [[] for _ in kept]
        for s, i in last.items():
            if s not in outs:
                dies[i].append(s)
        self.outputs = [(slot[_key(v)], _key(v)) for v in g.outputs]
        self.n_slots = len(slot)
        self.steps = [(st.fn, st.attrs, tuple(slot[k] for k in st.ins),
                       tuple(slot[k] for k in st.outs), tuple(dies[i]), st) for i, st in
                      enumerate(kept)]

    def accepts(self, env: dict[Key, Any]) -> bool:
        """Whether the plan can run these inputs: the fused kernels take CPU tensors."""
        if not self.regions:
            return True
        return all(not hasattr(v, "is_cpu") or v.is_cpu for v in env.values())

    def run(self, module: Any, env: dict[Key, Any]) -> None:
        """Run the steps: graph inputs from ``env``, outputs into it."""
        vals: list[Any] = [None] * self.n_slots
        for s, k in self.inputs:
            vals[s] = env[k]
        bufs = module._buffers
        for s, name in self.consts:
            vals[s] = bufs[name]
        i = 0
        try:
            for i, (fn, attrs, ins, outs, dies, _) in enumerate(self.steps):
                res = fn([vals[j] for j in ins], attrs)
                if len(outs) == 1:
                    vals[outs[0]] = res[0]
                else:
                    for o, r in zip(outs, res):
                        vals[o] = r
                for d in dies:
                    vals[d] = None
        except Exception as e:  # noqa: BLE001 - re-raised naming the node or kernel
            self._raise(module, self.steps[i], vals, e)
        for s, k in self.outputs:
            env[k] = vals[s]
        self.runs += 1

    @staticmethod
    def _raise(module: Any, step: tuple[Any, ...], vals: list[Any], e: Exception) -> None:
        ins, st = step[2], step[5]
        if st.node is not None:  # the interpreter's own error for the node
            module.run_node(st.node, [vals[j] for j in ins])
            raise e
        if isinstance(e, GraphOptError):
            raise e
        raise GraphOptError(f"fused {st.what}: {type(e).__name__}: {e}", where=st.where) from e


def build_plan(g: Graph, const_names: dict[int, str], fuse: bool = True) -> Plan:
    """The plan the torch callable runs ``g`` by (``fuse``: fused quantized linears)."""
    return Plan(g, const_names, fuse)
