"""Walking an FX graph of aten calls into IR values, for the PyTorch frontend.

``Lifter`` visits the nodes of an exported (or ``make_fx``-traced) aten graph in order:

* placeholders: user inputs -> ``input`` nodes (their symbolic dims named), parameters, buffers
  and lifted constants -> ``constant`` nodes, non-tensor inputs baked in at their values;
* calls on sizes (``sym_size``, arithmetic on sizes) -> dims (ints, symbols, products);
* calls whose inputs are all buffers, lifted constants or results of factory ops are run at
  import and become constants (static results only): position ids, rotary tables, causal masks;
* pass-through ops map to their input, assertion ops that produce nothing are dropped,
  ``operator.getitem`` picks a Value of a multi-output call;
* every other aten call goes through the ops (``fx_aten``) or stays opaque (``fx_opaque``).
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import FrontendError
from ..ir.graph import Graph
from ..ir.node import Node, Origin, Value, input_node
from ..ir.types import DType, Dim, TensorType, dim_product
from .fx_aten import AtenCtx, lift_call
from .fx_nodes import flat_args, get_attr, is_fx_node, map_args, target_str, user_line
from .fx_opaque import opaque_call

if TYPE_CHECKING:
    from .fx import ConstCache

__all__ = ["DROPPED", "FOLD_LIMIT", "Lifter", "PASSTHROUGH", "Token"]

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
    "aten._linalg_check_errors.default",
})


class Token:
    """The effect token torch.export threads through effectful calls (``with_effects``)."""
FOLD_LIMIT = 1 << 22  # largest result (elements) folded to a constant at import


class Lifter:
    """Walks an FX graph of aten calls and builds IR values.

    ``kinds`` classifies placeholders: ("input", name), ("param", tensor), ("fold", tensor),
    ("value", python value) or ("token", None) (an effect token);
    ``get_attr`` nodes read tensors from the graph module and count as parameters;
    ``consts`` makes one constant per torch tensor (shared by every graph of one module)."""

    def __init__(self, gm: Any, kinds: Mapping[str, tuple[str, Any]], title: str,
                 consts: "ConstCache", axes: Mapping[str, Mapping[int, str]] | None = None
                 ) -> None:
        self.gm = gm
        self.kinds = kinds
        self.title = title
        self.axes = axes or {}
        self.env: dict[Any, Any] = {}  # fx node -> Value | tuple[Value|None] | Dim | python value
        self.real: dict[Any, Any] = {}  # fx node -> torch value, for foldable nodes
        self.syms: dict[Any, str] = {}  # sympy symbol -> IR symbol name
        self.inputs: list[Node] = []
        self.consts = consts

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
        """The graph of the outputs (effect tokens left out)."""
        from torch.utils import _pytree as pytree

        leaves, _ = pytree.tree_flatten(out_node.args[0])
        outs: list[Value] = []
        for i, leaf in enumerate(leaves):
            v = self.env.get(leaf) if is_fx_node(leaf) else None
            if isinstance(v, Token):
                continue
            if not isinstance(v, Value):
                raise FrontendError(f"output {i} is {leaf!r} ({type(v).__name__}), not a tensor",
                                    where=f"module {self.title}")
            outs.append(v)
        return Graph(self.inputs, outs, [f"out{i}" for i in range(len(outs))], name=self.title)

    def where(self, n: Any) -> str:
        return f"module {self.title}, fx node {n.name} ({target_str(n.target) or n.op})" + (
            f" at {user_line(n)}" if user_line(n) else "")

    # -- one node
    def visit(self, n: Any) -> None:
        import torch

        if n.op == "placeholder":
            self.placeholder(n)
        elif n.op == "get_attr":
            t = get_attr(self.gm, n.target)
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
        elif kind == "token":
            self.env[n] = Token()
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
        return Origin("fx", n.name, user_line(n))

    # -- calls
    def call(self, n: Any) -> None:
        import torch

        target = n.target
        if target is operator.getitem:
            self.getitem(n)
            return
        if target is torch.ops.higher_order.with_effects:
            self.with_effects(n)
            return
        val = n.meta.get("val")
        if _is_sym(val) or isinstance(val, (int, float, bool)):
            self.sym_value(n, val)
            return
        tstr = target_str(target)
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
        elif isinstance(val, torch.SymBool):
            raise FrontendError(f"a test on the data-dependent size {val} is not supported (the "
                                f"IR's shapes cannot depend on tensor values: nonzero, unique, "
                                f"masked_select, ...)", where=self.where(n))
        elif isinstance(val, torch.SymFloat):
            raise FrontendError(f"a tensor value read as a python float ({val}, .item()) is not "
                                f"supported", where=self.where(n))
        else:
            self.env[n] = val

    def with_effects(self, n: Any) -> None:
        """``with_effects(token, op, *args)``: an assertion (``DROPPED``) passes the token on;
        any other effectful op is refused (graphopt lifts pure functions)."""
        token, op = n.args[0], n.args[1]
        tstr = target_str(op) or str(op)
        if tstr not in DROPPED:
            raise FrontendError(f"effectful call {tstr} (torch.export's with_effects) is not "
                                f"supported: graphopt lifts pure functions only",
                                where=self.where(n))
        self.env[n] = (self.env[token], None)

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
        nodes = [a for a in flat_args(n) if is_fx_node(a)]
        if any(a not in self.real for a in nodes):
            return False
        val = n.meta.get("val")
        vals = val if isinstance(val, (tuple, list)) else (val,)
        if not all(isinstance(v, torch.Tensor) and not any(isinstance(d, torch.SymInt)
                                                           for d in v.shape) for v in vals):
            return False
        if sum(v.numel() for v in vals) > FOLD_LIMIT:
            return False
        args, kwargs = map_args((n.args, n.kwargs), lambda a: self.real[a])
        out = n.target(*args, **kwargs)
        self.real[n] = out
        if isinstance(out, torch.Tensor):
            self.env[n] = self.const_of(out, n)
        else:
            self.env[n] = tuple(self.const_of(o, n) for o in out)
        return True

    def aten(self, n: Any, tstr: str, val: Any) -> None:
        import torch

        vals = tuple(val) if isinstance(val, (tuple, list)) else (val,)
        out_types = tuple(self.tensor_type(v, n) if isinstance(v, torch.Tensor) else None
                          for v in vals)
        used = {u.args[1] for u in n.users if u.target is operator.getitem}
        args, kwargs = map_args((n.args, n.kwargs), lambda a: self.env[a])
        ctx = AtenCtx(tstr, tuple(args), dict(kwargs), len(vals), used, out_types,
                      self.origin(n))
        lifted, reasons = lift_call(ctx, isinstance(val, (tuple, list)), lambda: self.where(n))
        if lifted is None:
            lifted = opaque_call(n, tstr, out_types, vals, reasons, self.env,
                                 lambda: self.where(n))
        self.env[n] = lifted


def _is_sym(v: Any) -> bool:
    import torch

    return isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool))


def _is_symbol(d: Any) -> bool:
    return bool(d.node.expr.is_Symbol)
