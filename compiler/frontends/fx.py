"""PyTorch frontend: ``torch.nn.Module`` -> IR ``Graph``.

``from_module`` exports the module with ``torch.export`` (non-strict), decomposes it to core ATen
and lifts every FX node (``fx_lift.Lifter``):

* placeholders: parameters, buffers and lifted constants -> ``constant`` nodes; user tensor
  inputs -> ``input`` nodes named after the forward's arguments (non-tensor inputs such as ints
  are baked in at their example values, as torch.export specializes them);
* ``call_function`` on an aten overload: the ops registered for that target
  (``ops_for_aten``) lift it through their ``from_aten(ctx)`` (``ctx`` is an
  :class:`~graphopt.frontends.fx_aten.AtenCtx`); an aten call nobody maps becomes an ``opaque``
  node (domain "aten") that re-dispatches to the same overload at run time (``fx_opaque``);
* nodes that depend only on buffers, lifted constants and factory ops (``arange``, ``full``, ...)
  are folded to constants at import (static results only): position ids, rotary tables, causal
  masks and T5's relative position buckets arrive as data;
* pass-through ops (``clone``, ``alias``, ``detach``, ...) map to their input; assertion ops
  that produce nothing are dropped;
* ``operator.getitem`` on a multi-output node -> the Value of that index;
* effect tokens (``with_effects``, e.g. linalg's error checks): assertions are dropped and the
  token is no graph input or output; other effectful calls are refused;
* sparse example inputs are refused naming the input (IR tensors are dense);
* the output structure (tuples, lists, dicts, named tuples, ``torch.return_types``) is kept in
  the graph's metadata (``fx_outputs``), so the torch callable returns what the module returns.

The decomposition is core ATen except ``scaled_dot_product_attention``, kept whole (PRESERVED).

If ``torch.export`` fails, ``torch.fx.symbolic_trace`` is tried: every plain FX node
(``call_module`` / ``call_method`` / ``call_function``) is decomposed to core ATen on its own with
``make_fx`` and lifted the same way. When both fail the error names both failures.

Dynamic shapes (``dynamic=True`` or an explicit ``{input: {axis: name}}``): dims are exported as
``Dim.AUTO`` and the resulting symbols are named ("batch" for axis 0, "seq" for axis 1 of rank-2/3
inputs). Limits: a dim must be an int, a symbol or a product of symbols and ints (``seq+1`` is
rejected with an error naming the node); nothing that depends on a symbolic size is folded, so
such calls (``arange(seq)``) need a mapping or stay opaque: an opaque call records symbolic sizes
by name and reads them from the symbols bound at run time (``graphopt.ops.symbols``), which the
torch callable binds from its inputs; ONNX export of such opaque calls is not possible.

This module drives both paths (export or trace, then lift) and holds the torch tensors <-> IR
constants conversion (``tensor_to_const`` / ``const_to_tensor``; the torch callable reads
constants back with the latter) and the output-structure key the torch callable reads
(``OUT_SPEC_KEY``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..errors import FrontendError, GraphOptError
from ..ir.graph import Graph, GraphMeta
from ..ir.node import ConstData, Node, Origin, Value, input_node
from ..ir.types import DType, TensorType, numpy_to_torch
from .fx_lift import Lifter
from .fx_nodes import get_attr, is_fx_node, map_args, target_str
from .fx_outputs import dumps_out_spec

if TYPE_CHECKING:
    import torch

# core ATen ops kept whole: scaled_dot_product_attention maps onto the IR's attention op (and
# torch 2.13's decomposition of it breaks a later view on non-contiguous strides in GPT-2)
PRESERVED = frozenset({
    "aten.scaled_dot_product_attention.default",
    "aten._scaled_dot_product_flash_attention_for_cpu.default",
    "aten._scaled_dot_product_attention_math.default",
})
OUT_SPEC_KEY = "torch.out_spec"  # GraphMeta.metadata key: the outputs' pytree spec (fx_outputs)


# ---- public API -------------------------------------------------------------------------------

def from_module(module: "torch.nn.Module", example_inputs: tuple, *,
                dynamic: "bool | Mapping[str, Mapping[int, str]]" = False) -> Graph:
    """Lift ``module`` called on ``example_inputs`` into an IR graph (see the module docstring).

    ``dynamic``: False (static shapes), True (axis 0 of every input is "batch", axis 1 of rank-2
    and rank-3 inputs is "seq"), or ``{input_name: {axis: symbol}}``.
    """
    import torch

    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    title = type(module).__name__
    _refuse_sparse(module, example_inputs, title)
    try:
        ep = _export(module, example_inputs, dynamic)
    except Exception as export_err:  # noqa: BLE001 - any export failure triggers the fallback
        if dynamic:
            raise FrontendError(f"torch.export failed ({type(export_err).__name__}: "
                                f"{_first_line(export_err)}); the symbolic_trace fallback has "
                                f"no dynamic shapes", where=f"module {title}") from export_err
        try:
            gm = torch.fx.symbolic_trace(module)
        except Exception as trace_err:  # noqa: BLE001
            raise FrontendError(
                f"torch.export failed: {type(export_err).__name__}: {_first_line(export_err)}; "
                f"torch.fx.symbolic_trace failed: {type(trace_err).__name__}: "
                f"{_first_line(trace_err)}", where=f"module {title}") from trace_err
        try:
            return _lift_symbolic_trace(gm, example_inputs, title)
        except Exception as lift_err:
            raise FrontendError(
                f"torch.export failed: {type(export_err).__name__}: {_first_line(export_err)}; "
                f"the torch.fx.symbolic_trace fallback failed: {type(lift_err).__name__}: "
                f"{lift_err}", where=f"module {title}") from lift_err
    axes = _dynamic_axes(module, example_inputs, dynamic) if dynamic else {}
    return _lift_exported(ep, axes, title)


def _refuse_sparse(module: Any, example_inputs: tuple, title: str) -> None:
    """Sparse example inputs are refused: the IR's tensors are dense, and a graph traced on a
    sparse input would be typed dense while its calls still expect the sparse layout."""
    import torch
    from torch.utils import _pytree as pytree

    names = _forward_names(module, example_inputs)
    for i, x in enumerate(example_inputs):
        for t in pytree.tree_leaves(x):
            if isinstance(t, torch.Tensor) and t.layout != torch.strided:
                nm = names[i] if i < len(names) and len(names) == len(example_inputs) else \
                    f"#{i}"
                raise FrontendError(
                    f"input {nm} is a {str(t.layout).removeprefix('torch.')} tensor; graphopt "
                    f"lifts dense tensors only: give .to_dense() and convert inside the module "
                    f"if it needs the sparse layout", where=f"module {title}")


# ---- torch.export path ------------------------------------------------------------------------

def _export(module: Any, example_inputs: tuple, dynamic: Any) -> Any:
    import torch

    dyn = None
    if dynamic:
        dyn = _dynamic_spec(module, example_inputs, dynamic)
    ep = torch.export.export(module, example_inputs, dynamic_shapes=dyn, strict=False)
    table = torch.export.default_decompositions()
    for op in list(table):
        if str(op) in PRESERVED:
            del table[op]
    return ep.run_decompositions(table)


def _dynamic_axes(module: Any, example_inputs: tuple, dynamic: Any) -> dict[str, dict[int, str]]:
    """{input name: {axis: symbol name}} for the inputs marked dynamic."""
    import torch

    names = _forward_names(module, example_inputs)
    if dynamic is True:
        axes: dict[str, dict[int, str]] = {}
        for nm, x in zip(names, example_inputs):
            if isinstance(x, torch.Tensor) and x.dim() >= 1:
                axes[nm] = {0: "batch"}
                if x.dim() in (2, 3):
                    axes[nm][1] = "seq"
        return axes
    unknown = set(dynamic) - set(names)
    if unknown:
        raise FrontendError(f"dynamic axes for unknown inputs {sorted(unknown)}; the forward "
                            f"takes {names}")
    return {k: dict(v) for k, v in dynamic.items()}


def _forward_names(module: Any, example_inputs: tuple) -> list[str]:
    import inspect

    return list(inspect.signature(module.forward).parameters)[:len(example_inputs)]


def _dynamic_spec(module: Any, example_inputs: tuple, dynamic: Any) -> tuple:
    from torch.export import Dim

    axes = _dynamic_axes(module, example_inputs, dynamic)
    return tuple({ax: Dim.AUTO for ax in axes[nm]} if nm in axes else None
                 for nm in _forward_names(module, example_inputs))


def _lift_exported(ep: Any, axes: Mapping[str, Mapping[int, str]], title: str) -> Graph:
    from torch.export.graph_signature import InputKind

    sig = ep.graph_signature
    kinds: dict[str, tuple[str, Any]] = {}
    for spec in sig.input_specs:
        name = getattr(spec.arg, "name", None)
        if name is None:
            continue
        if spec.kind == InputKind.USER_INPUT and hasattr(spec.arg, "value"):
            kinds[name] = ("value", spec.arg.value)  # a non-tensor input: baked in
        elif spec.kind == InputKind.USER_INPUT:
            kinds[name] = ("input", name)
        elif spec.kind == InputKind.TOKEN:
            kinds[name] = ("token", None)  # effect token: only assertions use it (fx_lift)
        elif spec.kind == InputKind.PARAMETER:
            kinds[name] = ("param", ep.state_dict[spec.target])
        elif spec.kind in (InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = ep.state_dict[spec.target] if spec.target in ep.state_dict else \
                ep.constants.get(spec.target)
            if t is None:
                raise FrontendError(f"no data for {spec.kind.name.lower()} {spec.target!r}",
                                    where=f"module {title}")
            kinds[name] = ("fold", t)
        else:
            raise FrontendError(f"input {name!r} of kind {spec.kind.name} is not supported",
                                where=f"module {title}")
    from torch.export.graph_signature import OutputKind

    mutated = [f"{o.kind.name.lower()} {o.target}" for o in sig.output_specs
               if o.kind not in (OutputKind.USER_OUTPUT, OutputKind.TOKEN)]
    if mutated:
        raise FrontendError(f"the module mutates state ({', '.join(mutated)}); graphopt lifts "
                            f"pure functions only (call module.eval(); keep caches outside)",
                            where=f"module {title}")
    lifter = Lifter(ep.graph_module, kinds, title, ConstCache(), axes)
    g = lifter.run()
    spec = ep.module_call_graph[0].signature.out_spec
    meta = GraphMeta(source=f"torch.export:{title}",
                     metadata=((OUT_SPEC_KEY, _spec_text(spec, title)),))
    return Graph(g.inputs, g.outputs, g.output_names, name=title, meta=meta)


# ---- symbolic_trace fallback ------------------------------------------------------------------

def _lift_symbolic_trace(gm: Any, example_inputs: tuple, title: str) -> Graph:
    """Lift a plain FX graph: each node runs once on the example values (giving the next node's
    example inputs) and is decomposed to core ATen on its own with make_fx."""
    import torch
    from torch.utils import _pytree as pytree

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise FrontendError(f"forward takes {len(placeholders)} inputs, "
                            f"{len(example_inputs)} given", where=f"module {title}")
    env: dict[Any, Any] = {}  # plain fx node -> Value | python value
    example: dict[Any, Any] = {}  # plain fx node -> example value (real tensors)
    inputs: list[Node] = []
    consts = ConstCache()
    for n, x in zip(placeholders, example_inputs):
        if not isinstance(x, torch.Tensor):
            env[n] = x
            example[n] = x
            continue
        node = input_node(n.name, TensorType(tuple(x.shape), DType.from_torch(x.dtype)))
        inputs.append(node)
        env[n] = node.out
        example[n] = x
    out_node = None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            out_node = n
            continue
        where = f"module {title}, fx node {n.name} ({n.op} {target_str(n.target) or n.target})"
        if n.op == "get_attr":
            t = get_attr(gm, n.target)
            example[n] = t
            if isinstance(t, torch.Tensor):
                env[n] = consts.get(t, Origin("fx", n.name), where)
            else:
                env[n] = t
            continue
        fn = _plain_callable(gm, n)
        args, kwargs = map_args((n.args, n.kwargs), lambda a: example[a])
        example[n] = fn(*args, **kwargs)
        try:
            env[n] = _lift_one(fn, n, env, example, consts, title)
        except FrontendError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised naming the node
            raise FrontendError(f"{type(e).__name__}: {e}", where=where) from e
    assert out_node is not None
    leaves, spec = pytree.tree_flatten(out_node.args[0])
    outs = []
    for i, leaf in enumerate(leaves):
        v = env.get(leaf) if is_fx_node(leaf) else None
        if not isinstance(v, Value):
            raise FrontendError(f"output {i} is not a tensor", where=f"module {title}")
        outs.append(v)
    meta = GraphMeta(source=f"torch.fx.symbolic_trace:{title}",
                     metadata=((OUT_SPEC_KEY, _spec_text(spec, title)),))
    return Graph(inputs, outs, [f"out{i}" for i in range(len(outs))], name=title, meta=meta)


def _plain_callable(gm: Any, n: Any) -> Callable[..., Any]:
    if n.op == "call_module":
        return gm.get_submodule(n.target)
    if n.op == "call_method":
        name = n.target
        return lambda self, *a, **k: getattr(self, name)(*a, **k)
    if n.op == "call_function":
        return n.target
    raise FrontendError(f"unexpected FX node kind {n.op}")


def _lift_one(fn: Callable[..., Any], n: Any, env: dict, example: dict,
              consts: "ConstCache", title: str) -> Any:
    """Decompose one plain FX call to core ATen (make_fx) and lift the aten graph."""
    import torch
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils import _pytree as pytree

    flat, spec = pytree.tree_flatten((n.args, n.kwargs))
    tensor_pos = [i for i, a in enumerate(flat) if is_fx_node(a) and
                  isinstance(example[a], torch.Tensor)]
    fixed = [example[a] if is_fx_node(a) else a for a in flat]

    def call(*ts: Any) -> Any:
        vals = list(fixed)
        for i, t in zip(tensor_pos, ts):
            vals[i] = t
        args, kwargs = pytree.tree_unflatten(vals, spec)
        return fn(*args, **kwargs)

    tensors = [fixed[i] for i in tensor_pos]
    # parameters stay real tensors (they become get_attr constants of the traced graph)
    table = {k: v for k, v in core_aten_decompositions().items() if str(k) not in PRESERVED}
    sub = make_fx(call, decomposition_table=table, tracing_mode="fake",
                  _allow_non_fake_inputs=True)(*tensors)
    phs = [p for p in sub.graph.nodes if p.op == "placeholder"]
    lifter = Lifter(sub, {}, title, consts)
    for p, i in zip(phs, tensor_pos):
        v = env[flat[i]]
        if not isinstance(v, Value):
            raise FrontendError(f"argument {flat[i].name} has no IR value")
        lifter.env[p] = v
    body = [m for m in sub.graph.nodes if m.op not in ("placeholder", "output")]
    for m in body:
        try:
            lifter.visit(m)
        except FrontendError:
            raise
        except Exception as e:  # noqa: BLE001
            raise FrontendError(f"{type(e).__name__}: {e}", where=lifter.where(m)) from e
    out = next(m for m in sub.graph.nodes if m.op == "output")
    leaves, out_spec = pytree.tree_flatten(out.args[0])
    vals = [lifter.env[x] if is_fx_node(x) else x for x in leaves]
    return pytree.tree_unflatten(vals, out_spec)


# ---- torch tensors as IR constants ------------------------------------------------------------

class ConstCache:
    """One ``constant`` node per torch tensor object (a weight used twice is one constant)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, Value]] = {}  # holds the tensor so its id stays unique

    def get(self, t: Any, origin: Origin, where: str) -> Value:
        hit = self._by_id.get(id(t))
        if hit is None:
            v = Node.build("constant", (), {"data": tensor_to_const(t, where)}, origin).out
            hit = self._by_id[id(t)] = (t, v)
        return hit[1]


def tensor_to_const(t: Any, where: str = "") -> ConstData:
    """A torch tensor as ConstData (bf16 kept faithfully as raw ONNX tensor bytes)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        from onnx import TensorProto

        p = TensorProto()
        p.data_type = DType.bf16.to_onnx()
        p.dims.extend(t.shape)
        p.raw_data = t.contiguous().view(torch.int16).numpy().tobytes()
        return ConstData(dtype=DType.bf16, shape=tuple(t.shape), onnx_proto=p.SerializeToString())
    try:
        DType.from_torch(t.dtype)
        arr = t.contiguous().numpy()
    except (TypeError, RuntimeError) as e:
        raise FrontendError(f"constant of dtype {t.dtype} cannot be held: {e}",
                            where=where or None) from None
    return ConstData(arr)


def const_to_tensor(data: ConstData) -> "torch.Tensor":
    """The inverse of :func:`tensor_to_const` (also reads raw-bytes bf16 ONNX protos)."""
    import torch

    if data.has_array:
        return numpy_to_torch(data.array)
    if data.onnx_proto is not None and data.dtype == DType.bf16:
        from onnx import TensorProto

        p = TensorProto()
        p.ParseFromString(data.onnx_proto)
        if p.raw_data:
            raw = np.frombuffer(p.raw_data, dtype=np.int16).copy()
        else:  # bf16 stored in int32_data, one value per element
            raw = np.asarray(p.int32_data, dtype=np.int32).astype(np.uint16).view(np.int16)
        return torch.from_numpy(raw).view(torch.bfloat16).reshape(data.shape)
    raise GraphOptError(f"constant {data!r} has no data torch can read")


def _spec_text(spec: Any, title: str) -> str:
    """The output spec as ``OUT_SPEC_KEY``'s text; an unwritable one names the module."""
    try:
        return dumps_out_spec(spec)
    except FrontendError as e:
        raise FrontendError(e.message, where=f"module {title}") from e


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
