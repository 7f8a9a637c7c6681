"""PyTorch frontend: ``torch.nn.Module`` -> IR ``Graph``.

``from_module`` exports the module with ``torch.export`` (non-strict), decomposes it to core ATen
and lifts every FX node:

* placeholders: parameters, buffers and lifted constants -> ``constant`` nodes; user tensor
  inputs -> ``input`` nodes named after the forward's arguments (non-tensor inputs such as ints
  are baked in at their example values, as torch.export specializes them);
* ``call_function`` on an aten overload: the ops registered for that target
  (``ops_for_aten``) lift it through their ``from_aten(ctx)`` (``ctx`` is an :class:`AtenCtx`);
  an aten call nobody maps becomes an ``opaque`` node (domain "aten") that re-dispatches to the
  same overload at run time (:func:`call_opaque_aten`);
* nodes that depend only on buffers, lifted constants and factory ops (``arange``, ``full``, ...)
  are folded to constants at import (static results only): position ids, rotary tables, causal
  masks and T5's relative position buckets arrive as data;
* pass-through ops (``clone``, ``alias``, ``detach``, ...) map to their input; assertion ops
  that produce nothing are dropped;
* ``operator.getitem`` on a multi-output node -> the Value of that index.

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
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import FrontendError, GraphOptError
from ..ir.graph import Graph, GraphMeta
from ..ir.node import Attrs, ConstData, Node, Origin, Value, input_node
from ..ir.types import DType, Dim, TensorType, dim_product

if TYPE_CHECKING:
    import torch

# aten calls that return their (first) input unchanged at inference
PASSTHROUGH = frozenset({
    "aten.alias.default", "aten.clone.default", "aten.detach.default",
    "aten.lift_fresh_copy.default", "aten.contiguous.default",
})
# calls with no result that only check facts torch.export already relied on
DROPPED = frozenset({
    "aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default",
    "aten._assert_async.msg", "aten._assert_async.default",
})
# core ATen ops kept whole: scaled_dot_product_attention maps onto the IR's attention op (and
# torch 2.13's decomposition of it breaks a later view on non-contiguous strides in GPT-2)
PRESERVED = frozenset({
    "aten.scaled_dot_product_attention.default",
    "aten._scaled_dot_product_flash_attention_for_cpu.default",
    "aten._scaled_dot_product_attention_math.default",
})
FOLD_LIMIT = 1 << 22  # largest result (elements) folded to a constant at import
OUT_SPEC_KEY = "torch.out_spec"  # GraphMeta.metadata key: serialized pytree spec of the outputs


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


def call_opaque_aten(xs: Sequence["torch.Tensor"], attrs: Attrs) -> tuple["torch.Tensor", ...]:
    """Run an opaque aten node: re-resolve its overload and call it with the recorded args."""
    import torch

    fn = resolve_aten(attrs["op_type"])
    call = json.loads(attrs["call"])
    device = xs[0].device if xs else torch.device("cpu")
    args = [_decode(a, xs, device) for a in call["args"]]
    kwargs = {k: _decode(v, xs, device) for k, v in call["kwargs"].items()}
    out = fn(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    raise GraphOptError(f"opaque aten {attrs['op_type']} returned {type(out).__name__}, "
                        f"not tensors")


def resolve_aten(target: str) -> Any:
    """``"aten.add.Tensor"`` -> ``torch.ops.aten.add.Tensor``."""
    import torch

    parts = target.split(".")
    if len(parts) != 3:
        raise GraphOptError(f"bad aten target {target!r} (want namespace.name.overload)")
    ns, name, overload = parts
    try:
        return getattr(getattr(getattr(torch.ops, ns), name), overload)
    except AttributeError as e:
        raise GraphOptError(f"aten target {target!r} does not exist in torch "
                            f"{torch.__version__}") from e


# ---- the ctx op files write from_aten against ---------------------------------------------------

@dataclass
class AtenCtx:
    """One aten call being lifted. ``args``/``kwargs`` hold ``Value``s where the call has tensors
    (lists of Values for tensor lists), symbol names or ints for sizes, and other python values
    as they are (torch dtypes stay torch dtypes)."""

    target: str
    args: tuple
    kwargs: dict
    num_outputs: int
    used_outputs: set[int]
    out_types: tuple["TensorType | None", ...]
    origin: Origin

    def tensor_args(self) -> list[Value]:
        """The positional Value args in order."""
        return [a for a in self.args if isinstance(a, Value)]

    def build(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Build ``op(inputs) {attrs}`` (with this call's origin) and return its first output."""
        return Node.build(op, tuple(inputs), attrs, self.origin).outputs[0]

    def constant(self, array: Any) -> Value:
        return Node.build("constant", (), {"data": ConstData(np.asarray(array))},
                          self.origin).out

    def scalar(self, x: Any, like: Value) -> Value:
        """A 0-d constant of ``like``'s dtype."""
        t = like.type
        if not isinstance(t, TensorType):
            raise FrontendError(f"scalar like {t}: not a tensor", where=str(self.origin))
        return self.constant(np.asarray(x, dtype=t.dtype.to_numpy()))


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
    from torch.utils import _pytree as pytree

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
               if o.kind != OutputKind.USER_OUTPUT]
    if mutated:
        raise FrontendError(f"the module mutates state ({', '.join(mutated)}); graphopt lifts "
                            f"pure functions only (call module.eval(); keep caches outside)",
                            where=f"module {title}")
    lifter = _Lifter(ep.graph_module, kinds, title, axes)
    g = lifter.run()
    spec = ep.module_call_graph[0].signature.out_spec
    meta = GraphMeta(source=f"torch.export:{title}",
                     metadata=((OUT_SPEC_KEY, pytree.treespec_dumps(spec)),))
    return Graph(g.inputs, g.outputs, g.output_names, name=title, meta=meta)


# ---- the lifter (shared by both paths) --------------------------------------------------------

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


class _Lifter:
    """Walks an FX graph of aten calls and builds IR values.

    ``kinds`` classifies placeholders: ("input", name), ("param", tensor), ("fold", tensor) or
    ("value", python value);
    ``get_attr`` nodes read tensors from the graph module and count as parameters."""

    def __init__(self, gm: Any, kinds: Mapping[str, tuple[str, Any]], title: str,
                 axes: Mapping[str, Mapping[int, str]] | None = None,
                 const_cache: "ConstCache | None" = None) -> None:
        self.gm = gm
        self.kinds = kinds
        self.title = title
        self.axes = axes or {}
        self.env: dict[Any, Any] = {}  # fx node -> Value | tuple[Value|None] | Dim | python value
        self.real: dict[Any, Any] = {}  # fx node -> torch value, for foldable nodes
        self.syms: dict[Any, str] = {}  # sympy symbol -> IR symbol name
        self.inputs: list[Node] = []
        self.consts = const_cache if const_cache is not None else ConstCache()

    # -- entry points
    def run(self) -> Graph:
        out_node = None
        for n in self.gm.graph.nodes:
            try:
                if n.op == "output":
                    out_node = n
                    continue
                self.visit(n)
            except FrontendError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised naming the node
                raise FrontendError(f"{type(e).__name__}: {e}", where=self.where(n)) from e
        assert out_node is not None
        return self.outputs(out_node)

    def outputs(self, out_node: Any) -> Graph:
        from torch.utils import _pytree as pytree

        leaves, _ = pytree.tree_flatten(out_node.args[0])
        outs: list[Value] = []
        for i, leaf in enumerate(leaves):
            v = self.env.get(leaf) if _is_fx_node(leaf) else None
            if not isinstance(v, Value):
                raise FrontendError(f"output {i} is {leaf!r} ({type(v).__name__}), not a tensor",
                                    where=f"module {self.title}")
            outs.append(v)
        return Graph(self.inputs, outs, [f"out{i}" for i in range(len(outs))], name=self.title)

    def where(self, n: Any) -> str:
        return f"module {self.title}, fx node {n.name} ({_target_str(n.target) or n.op})" + (
            f" at {_user_line(n)}" if _user_line(n) else "")

    # -- one node
    def visit(self, n: Any) -> None:
        import torch

        if n.op == "placeholder":
            self.placeholder(n)
        elif n.op == "get_attr":
            t = _get_attr(self.gm, n.target)
            if not isinstance(t, torch.Tensor):
                raise FrontendError(f"get_attr {n.target} is {type(t).__name__}, not a tensor",
                                    where=self.where(n))
            self.env[n] = self.const_of(t, n)
        elif n.op == "call_function":
            self.call(n)
        else:
            raise FrontendError(f"unexpected FX node kind {n.op} in an aten graph",
                                where=self.where(n))

    def placeholder(self, n: Any) -> None:
        kind, x = self.kinds.get(n.name, ("input", n.name))
        if kind == "input":
            node = input_node(x, self.input_type(n, x))
            self.inputs.append(node)
            self.env[n] = node.out
        elif kind == "value":
            self.env[n] = x
        else:
            self.env[n] = self.const_of(x, n)
            if kind == "fold":
                self.real[n] = x

    def input_type(self, n: Any, name: str) -> TensorType:
        import torch

        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise FrontendError(f"input {name!r} is {type(val).__name__}, not a tensor",
                                where=self.where(n))
        wanted = self.axes.get(name, {})
        for ax, d in enumerate(val.shape):
            if isinstance(d, torch.SymInt) and _is_symbol(d):
                sym = d.node.expr
                if sym not in self.syms:
                    base = wanted.get(ax, f"{name}_{ax}")
                    taken = set(self.syms.values())
                    self.syms[sym] = base if base not in taken else f"{base}_{name}"
        return self.tensor_type(val, n)

    def tensor_type(self, val: Any, n: Any) -> TensorType:
        try:
            dt = DType.from_torch(val.dtype)
        except TypeError as e:
            raise FrontendError(str(e), where=self.where(n)) from None
        return TensorType(tuple(self.dim(d, n) for d in val.shape), dt)

    def dim(self, d: Any, n: Any) -> Dim:
        import torch

        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            if expr.is_Integer:
                return int(expr)
            return self.dim_of_expr(expr, n)
        return int(d)

    def dim_of_expr(self, expr: Any, n: Any) -> Dim:
        if expr.is_Symbol:
            if expr not in self.syms:
                self.syms[expr] = str(expr)
            return self.syms[expr]
        if expr.is_Mul:
            parts: list[Dim] = []
            for f in expr.args:
                if f.is_Integer:
                    parts.append(int(f))
                elif f.is_Symbol:
                    parts.append(self.dim_of_expr(f, n))
                else:
                    break
            else:
                return dim_product(parts)
        raise FrontendError(f"size {expr} is not representable in the IR (only ints, symbols and "
                            f"their products are)", where=self.where(n))

    # -- constants
    def const_of(self, t: Any, n: Any) -> Value:
        return self.consts.get(t, self.origin(n), self.where(n))

    def origin(self, n: Any) -> Origin:
        return Origin("fx", n.name, _user_line(n))

    # -- calls
    def call(self, n: Any) -> None:
        import torch

        target = n.target
        if target is operator.getitem:
            self.getitem(n)
            return
        val = n.meta.get("val")
        if _is_sym(val) or isinstance(val, (int, float, bool)):
            self.sym_value(n, val)
            return
        tstr = _target_str(target)
        if tstr in DROPPED:
            return
        if tstr in PASSTHROUGH:
            self.env[n] = self.env[n.args[0]]
            if n.args[0] in self.real:
                self.real[n] = self.real[n.args[0]]
            return
        if self.try_fold(n):
            return
        if not isinstance(target, torch._ops.OpOverload):
            raise FrontendError(f"call of {target!r} is not an aten op", where=self.where(n))
        self.aten(n, tstr, val)

    def sym_value(self, n: Any, val: Any) -> None:
        """A node computing a size (sym_size, arithmetic on sizes): its Dim or python number."""
        import torch

        if isinstance(val, torch.SymInt):
            self.env[n] = self.dim(val, n)
        elif isinstance(val, (torch.SymFloat, torch.SymBool)):
            raise FrontendError(f"symbolic {type(val).__name__} {val} is not supported",
                                where=self.where(n))
        else:
            self.env[n] = val

    def getitem(self, n: Any) -> None:
        src, idx = n.args
        got = self.env[src]
        if isinstance(got, Value) or not isinstance(got, (tuple, list)):
            raise FrontendError(f"getitem {idx} of a single value", where=self.where(n))
        v = got[idx]
        if v is None:
            raise FrontendError(f"output {idx} of {src.name} was not produced by its mapping "
                                f"although it is used", where=self.where(n))
        self.env[n] = v
        if src in self.real:
            self.real[n] = self.real[src][idx]

    def try_fold(self, n: Any) -> bool:
        """Fold a call whose tensor inputs are all foldable to a constant."""
        import torch

        if not isinstance(n.target, torch._ops.OpOverload):
            return False
        if torch.Tag.nondeterministic_seeded in n.target.tags:
            return False
        nodes = [a for a in _flat_args(n) if _is_fx_node(a)]
        if any(a not in self.real for a in nodes):
            return False
        val = n.meta.get("val")
        vals = val if isinstance(val, (tuple, list)) else (val,)
        if not all(isinstance(v, torch.Tensor) and not any(isinstance(d, torch.SymInt)
                                                           for d in v.shape) for v in vals):
            return False
        if sum(v.numel() for v in vals) > FOLD_LIMIT:
            return False
        args, kwargs = _map_args((n.args, n.kwargs), lambda a: self.real[a])
        out = n.target(*args, **kwargs)
        self.real[n] = out
        if isinstance(out, torch.Tensor):
            self.env[n] = self.const_of(out, n)
        else:
            self.env[n] = tuple(self.const_of(o, n) for o in out)
        return True

    def aten(self, n: Any, tstr: str, val: Any) -> None:
        import torch

        from ..ops.registry import Unsupported, ops_for_aten

        vals = tuple(val) if isinstance(val, (tuple, list)) else (val,)
        out_types = tuple(self.tensor_type(v, n) if isinstance(v, torch.Tensor) else None
                          for v in vals)
        used = {u.args[1] for u in n.users if u.target is operator.getitem}
        args, kwargs = _map_args((n.args, n.kwargs), lambda a: self.env[a])
        ctx = AtenCtx(tstr, tuple(args), dict(kwargs), len(vals), used, out_types,
                      self.origin(n))
        reasons = []
        for opdef in ops_for_aten(tstr):
            try:
                res = opdef.from_aten(ctx)
            except Unsupported as e:
                reasons.append(f"{opdef.name}: {e}")
                continue
            except GraphOptError as e:
                raise FrontendError(f"{opdef.name}.from_aten failed: {e.one_line()}",
                                    where=self.where(n)) from e
            if res is None:
                reasons.append(f"{opdef.name}: not applicable")
                continue
            self.env[n] = self.check(n, opdef.name, res, out_types, isinstance(val, (tuple, list)))
            return
        self.env[n] = self.opaque(n, tstr, out_types, vals, "; ".join(reasons))

    def check(self, n: Any, op: str, res: Any, want: tuple, multi: bool) -> Any:
        # (a Value is itself a NamedTuple: test for it first)
        got = (res,) if isinstance(res, Value) or not isinstance(res, (tuple, list)) else \
            tuple(res)
        if len(got) != len(want):
            raise FrontendError(f"{op}.from_aten returned {len(got)} values for {len(want)} "
                                f"outputs", where=self.where(n))
        for i, (v, w) in enumerate(zip(got, want)):
            if v is None:
                continue
            if not isinstance(v, Value):
                raise FrontendError(f"{op}.from_aten returned {type(v).__name__} for output {i}",
                                    where=self.where(n))
            if w is not None and v.type != w:
                raise FrontendError(f"{op}.from_aten gives {v.type} for output {i} but torch "
                                    f"says {w}", where=self.where(n))
        return got if multi else got[0]

    def opaque(self, n: Any, tstr: str, out_types: tuple, vals: tuple, reason: str) -> Any:
        if any(t is None for t in out_types):
            raise FrontendError(f"unmapped aten op {tstr} has non-tensor outputs "
                                f"{[type(v).__name__ for v in vals]}", where=self.where(n))
        inputs: list[Value] = []
        call = {"args": [self.encode(a, inputs, n) for a in n.args],
                "kwargs": {k: self.encode(v, inputs, n) for k, v in n.kwargs.items()}}
        detail = _user_line(n)
        if reason:
            detail = f"{detail}; kept opaque: {reason}" if detail else f"kept opaque: {reason}"
        attrs = {"op_type": tstr, "domain": "aten", "proto": None, "opsets": (),
                 "out_types": out_types, "present": (), "captured": (),
                 "call": json.dumps(call, sort_keys=True), "functions": ()}
        node = Node.build("opaque", tuple(inputs), attrs, Origin("fx", n.name, detail))
        return node.outputs if len(out_types) != 1 or isinstance(n.meta.get("val"), (
            tuple, list)) else node.out

    def encode(self, a: Any, inputs: list[Value], n: Any) -> Any:
        import torch

        if _is_fx_node(a):
            v = self.env[a]
            if isinstance(v, Value):
                if v not in inputs:
                    inputs.append(v)
                return {"$t": inputs.index(v)}
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if isinstance(v, str):  # a symbolic size, read from the bound symbols at run time
                return {"$dim": v}
            raise FrontendError(f"argument {a.name} = {v!r} cannot be recorded in an opaque "
                                f"aten call", where=self.where(n))
        if isinstance(a, (list, tuple)):
            return [self.encode(x, inputs, n) for x in a]
        if a is None or isinstance(a, (bool, int, str)):
            return a
        if isinstance(a, float):
            return a if math.isfinite(a) else {"$float": repr(a)}
        if isinstance(a, torch.dtype):
            return {"$dtype": str(a).removeprefix("torch.")}
        if isinstance(a, torch.device):
            return {"$device": str(a)}
        if isinstance(a, torch.layout):
            return {"$layout": str(a).removeprefix("torch.")}
        if isinstance(a, torch.memory_format):
            return {"$memory_format": str(a).removeprefix("torch.")}
        raise FrontendError(f"cannot record argument {a!r} ({type(a).__name__}) of an opaque "
                            f"aten call", where=self.where(n))


def _decode(a: Any, xs: Sequence[Any], device: Any) -> Any:
    import torch

    if isinstance(a, list):
        return [_decode(x, xs, device) for x in a]
    if isinstance(a, dict):
        (k, v), = a.items()
        if k == "$t":
            return xs[v]
        if k == "$float":
            return float(v)
        if k == "$dim":
            from ..ops.symbols import bound_symbols, eval_dim

            d = eval_dim(v)
            if d is None:
                raise GraphOptError(f"size {v!r} of an opaque aten call has no run-time value "
                                    f"(bound symbols: {dict(bound_symbols())})")
            return d
        if k == "$dtype":
            return getattr(torch, v)
        if k == "$device":
            return device  # the callable's device, not the one traced on
        if k == "$layout":
            return getattr(torch, v)
        if k == "$memory_format":
            return getattr(torch, v)
        raise GraphOptError(f"bad opaque aten call argument {a!r}")
    return a


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
        where = f"module {title}, fx node {n.name} ({n.op} {_target_str(n.target) or n.target})"
        if n.op == "get_attr":
            t = _get_attr(gm, n.target)
            example[n] = t
            if isinstance(t, torch.Tensor):
                env[n] = consts.get(t, Origin("fx", n.name), where)
            else:
                env[n] = t
            continue
        fn = _plain_callable(gm, n)
        args, kwargs = _map_args((n.args, n.kwargs), lambda a: example[a])
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
        v = env.get(leaf) if _is_fx_node(leaf) else None
        if not isinstance(v, Value):
            raise FrontendError(f"output {i} is not a tensor", where=f"module {title}")
        outs.append(v)
    meta = GraphMeta(source=f"torch.fx.symbolic_trace:{title}",
                     metadata=((OUT_SPEC_KEY, pytree.treespec_dumps(spec)),))
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
    tensor_pos = [i for i, a in enumerate(flat) if _is_fx_node(a) and
                  isinstance(example[a], torch.Tensor)]
    fixed = [example[a] if _is_fx_node(a) else a for a in flat]

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
    lifter = _Lifter(sub, {}, title, const_cache=consts)
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
    vals = [lifter.env[x] if _is_fx_node(x) else x for x in leaves]
    return pytree.tree_unflatten(vals, out_spec)


# ---- helpers ----------------------------------------------------------------------------------

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
        return torch.from_numpy(np.array(data.array))
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


def _get_attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_fx_node(a: Any) -> bool:
    from torch import fx

    return isinstance(a, fx.Node)


def _is_sym(v: Any) -> bool:
    import torch

    return isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool))


def _is_symbol(d: Any) -> bool:
    return bool(d.node.expr.is_Symbol)


def _flat_args(n: Any) -> list[Any]:
    from torch.utils import _pytree as pytree

    return pytree.tree_leaves((n.args, n.kwargs))


def _map_args(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """Replace every fx Node in a (args, kwargs) tree by ``fn(node)``; tuples/lists/dicts kept."""
    if _is_fx_node(tree):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(_map_args(x, fn) for x in tree)
    if isinstance(tree, list):
        return [_map_args(x, fn) for x in tree]
    if isinstance(tree, dict):
        return {k: _map_args(v, fn) for k, v in tree.items()}
    return tree


def _target_str(target: Any) -> str:
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return ""


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def _user_line(n: Any) -> str:
    """The innermost stack frame outside torch itself: "file.py:12 in fn: code"."""
    st = n.meta.get("stack_trace") if hasattr(n, "meta") else None
    if not st:
        return ""
    frames = _FRAME.findall(st)
    if not frames:
        return ""
    torch_dir = os.sep + "torch" + os.sep
    pick = next((f for f in reversed(frames) if torch_dir not in f[0]), frames[-1])
    path, line, fn, code = pick
    return f"{os.path.basename(path)}:{line} in {fn}: {code.strip()}"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
