"""The op registry: every op is one ``OpDef`` subclass declaring all of its aspects side by side.

Aspects of an op (see docs/architecture.md); every fact about an op lives here, on the op:

* ``infer(in_types, attrs)``  -> output types; raises ShapeError naming the op and input types.
* ``numpy(xs, attrs)``        -> reference semantics on numpy arrays (tuple of outputs).
* ``torch(xs, attrs)``        -> the same semantics on torch tensors (used by the torch callable).
* ``symbolic(xs, attrs)``     -> z3 semantics over numpy object arrays of z3 terms. The default
  runs ``numpy`` on object arrays, which is exact for linear and structural ops; non-linear ops
  override it with uninterpreted functions (``symbolic.uf``) and declare what the verifier may
  assume about them in ``axioms``.
* ``fingerprint(xs, attrs)``  -> semantics over integers mod a prime (the substitution
  generator's fingerprints): ``exact_int``, ``ordered`` or ``standin`` choose a default, other
  ops override the method (``residues.py`` has the arithmetic).
* ``cost(in_types, out_types, attrs)`` -> Cost(flops, bytes, launches); ``cost_class``,
  ``matrix_unit``, ``partial_read_inputs``, ``reduced_axes`` and ``cpu_epilogue`` tell the
  fusion-aware cost model how the op groups with its neighbours.
* ``onnx`` / ``aten``         -> the ONNX op types and aten targets it maps to (data); the
  frontends and exporter look up ``from_onnx`` / ``to_onnx`` / ``from_aten`` here;
  ``onnx_min_opset`` is the opset its single-node ONNX form needs.
* ``triton_format`` / ``triton_expr`` -> its value inside a generated pointwise kernel (source
  text; never imports triton); ``triton_kernel`` names the kernel family lowering it as an anchor.
* ``dim_attrs``, ``associative``, ``commutative``, ``index_pass_through``: structural facts
  read by the rule machinery and the checker; ``value_inputs`` and ``index_bound(pos, ...)``
  tell the check's input generator (``graphopt.inputs``) which inputs an op hands on unchanged
  and which hold indices into another input's dim.
* ``examples(rng)``           -> sample (inputs, attrs); the conformance test runs every op
  through every aspect with them, and checks that the declarations agree with the semantics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Sequence

import numpy as np

from ..errors import ShapeError, UnknownOpError
from ..ir.types import Dim, DType, TensorType, ValueType

if TYPE_CHECKING:
    from ..ir.node import Attrs, Node, Origin
    from .symbolic import Axiom

# how an op groups with its neighbours in the cost model (cost/model.py Kind):
#   source: input / constant; view: aliases its input (reshape, squeeze, ...), no kernel;
#   pointwise: elementwise-like, fuses into chains and epilogues; injective: index-mapping data
#   movement; reduction: reduces rows (fuses prologues/epilogues when a row fits on chip);
#   heavy: matmul / conv / attention / pools, anchors with epilogues; opaque: never fused;
#   collective: communication between ranks (ops/collectives.py), priced by the device's link
CostClass = Literal["source", "view", "pointwise", "injective", "reduction", "heavy", "opaque",
                    "collective"]


@dataclass(frozen=True)
class Cost:
    """Work of one op: floating-point ops, bytes read+written at its boundary, kernel launches."""

    flops: float = 0.0
    bytes: float = 0.0
    launches: int = 1

    def __add__(self, o: "Cost") -> "Cost":
        return Cost(self.flops + o.flops, self.bytes + o.bytes, self.launches + o.launches)


@dataclass
class Example:
    """Sample inputs and attrs for an op, used by the conformance test."""

    inputs: list[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    # ops whose numerics differ a bit between numpy and torch (e.g. erf) loosen this
    rtol: float = 1e-5
    atol: float = 1e-6
    # False where z3 cannot express the op on these inputs (e.g. integer division)
    symbolic: bool = True


class Unsupported(Exception):
    """A frontend node this op cannot model faithfully; the node stays opaque (reason kept)."""


class NotSymbolic(Exception):
    """The op has no z3 semantics (the verifier treats it as opaque)."""


class NotFingerprinted(Exception):
    """The op has no semantics over residues mod a prime (the generator cannot enumerate it)."""


class NotGenerated(Exception):
    """The op has no Triton expression for this node's form (the message says why)."""


class OpDef:
    """Base class of op declarations. Subclasses set ``name`` and override the aspects."""

    name: ClassVar[str] = ""
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int | None] = None  # None: unbounded
    pure: ClassVar[bool] = True  # False: never CSE'd or folded (random ops, opaque nodes)
    commutative: ClassVar[bool] = False
    associative: ClassVar[bool] = False  # op(op(a, b), c) == op(a, op(b, c)) (rule pruning)
    elementwise: ClassVar[bool] = False  # pointwise with numpy broadcasting
    onnx: ClassVar[tuple[str, ...]] = ()
    aten: ClassVar[tuple[str, ...]] = ()
    # why ``onnx`` is empty (e.g. "exported as Reciprocal(Sqrt(x))"); the conformance test
    # requires every op to declare an ONNX op type or this reason
    onnx_missing: ClassVar[str | None] = None
    # the default ONNX opset its single-node form needs (below it the exporter writes a
    # composition); the pipeline raises a fused graph's opset to it. None: any opset
    onnx_min_opset: ClassVar[int | None] = None
    # size-valued attributes (dims or tuples of dims, e.g. reshape's shape): generated rules
    # store them in terms of dim variables (rewrite/dims.py)
    dim_attrs: ClassVar[tuple[str, ...]] = ()
    # every input's values reach the outputs unchanged (moved, repeated, converted), so an
    # integer input feeding gather indices through it must be a valid index (check.py)
    index_pass_through: ClassVar[bool] = False
    # inputs whose values reach the outputs unchanged where not every input's do (where's two
    # branches, not its condition); the check's input generator follows them (graphopt.inputs)
    value_inputs: ClassVar[tuple[int, ...]] = ()
    # what the verifier may assume about the uninterpreted functions ``symbolic`` uses
    axioms: ClassVar[tuple["Axiom", ...]] = ()
    # irrational constants of the op's definition, by name (value: their float64), used by
    # ``symbolic`` as ``symbolic.named_constant(name)``; a hand-written rule with
    # ``constants: TOL`` reads its lhs constants within TOL of these as them (verify_z3.py)
    symbolic_constants: ClassVar[dict[str, float]] = {}
    # unary ops: IEEE's value at -inf ("-inf": stays -inf; None: not modelled) for masked scores
    value_at_neg_inf: ClassVar[float | bool | str | None] = None

    # cost model (cost/model.py): fusion class, flops on matrix units (tensor cores), inputs
    # read only as far as the output reaches (slice / gather data), and whether ONNX Runtime's
    # CPU provider fuses it as the epilogue of a matmul / conv (Gemm bias, activations)
    cost_class: ClassVar[CostClass] = "pointwise"
    matrix_unit: ClassVar[bool] = False
    partial_read_inputs: ClassVar[tuple[int, ...]] = ()
    cpu_epilogue: ClassVar[bool] = False

    # fingerprints over integers mod residues.P (subst/fingerprint.py), when the op does not
    # override ``fingerprint``: exact_int: the numpy aspect is exact on int64 residues;
    # ordered: it compares, so it runs on the signed representatives (exact below 2**19);
    # standin: name of the random cubic standing in for a non-linear function
    exact_int: ClassVar[bool] = False
    ordered: ClassVar[bool] = False
    standin: ClassVar[str | None] = None

    # Triton (codegen/triton): the op's value inside a generated pointwise kernel, as a format
    # string over the operand expressions {0}, {1}, ... (ops whose form depends on attrs or
    # operands override ``triton_expr``); the operands it takes ("float": f16/bf16/f32 computed
    # in fp32, "bool", or None: ``triton_expr`` checks them); why an elementwise op has none;
    # and the kernel family (codegen/triton/kernels/) that lowers it as a region's anchor
    triton_format: ClassVar[str | None] = None
    triton_operands: ClassVar[Literal["float", "bool"] | None] = "float"
    triton_missing: ClassVar[str | None] = None
    triton_kernel: ClassVar[Literal["matmul", "attention", "reduction"] | None] = None

    # ---- types ---------------------------------------------------------------------------
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: "Attrs") -> "Attrs":
        """Canonical attrs (e.g. negative axes made positive). Default: unchanged."""
        return attrs

    def onnx_opset_for(self, attrs: "Attrs") -> int:
        """The lowest default-domain opset at which a node with these attributes has an ONNX
        form at all (0: any); the pipeline raises a graph's opset to it."""
        return 0

    def infer(self, in_types: tuple[ValueType, ...], attrs: "Attrs") -> tuple[ValueType, ...]:
        raise NotImplementedError(f"{self.name}.infer")

    def checked_infer(self, in_types: tuple[ValueType, ...], attrs: "Attrs",
                      origin: "Origin | None" = None) -> tuple[ValueType, ...]:
        n = len(in_types)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"{self.min_inputs}" if self.max_inputs == self.min_inputs else
                    f"{self.min_inputs}..{self.max_inputs if self.max_inputs is not None else ''}")
            raise ShapeError(f"{self.name} takes {want} inputs, got {n}",
                             where=_where(self.name, origin))
        try:
            return tuple(self.infer(in_types, attrs))
        except ShapeError as e:
            if e.where is None:
                e.where = _where(self.name, origin)
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            ins = ", ".join(map(str, in_types))
            raise ShapeError(f"{self.name}({ins}) {dict(attrs)}: {e}",
                             where=_where(self.name, origin)) from e

    # ---- semantics -----------------------------------------------------------------------
    def numpy(self, xs: Sequence[np.ndarray], attrs: "Attrs") -> tuple[np.ndarray, ...]:
        raise NotImplementedError(f"{self.name}.numpy")

    def torch(self, xs: Sequence[Any], attrs: "Attrs") -> tuple[Any, ...]:
        raise NotImplementedError(f"{self.name}.torch")

    def symbolic(self, xs: Sequence[np.ndarray], attrs: "Attrs") -> tuple[np.ndarray, ...]:
        """z3 semantics over object arrays; default: the numpy reference (exact for linear ops)."""
        return self.numpy(xs, attrs)

    def symbolic_typed(self, xs: Sequence[np.ndarray], attrs: "Attrs",
                       in_types: Sequence[ValueType]) -> tuple[np.ndarray, ...]:
        """``symbolic`` for ops whose meaning depends on the input dtypes (a norm of f16 rounds
        its normalized value to f16); default: ``symbolic``. The verifier calls this one."""
        return self.symbolic(xs, attrs)

    def symbolic_domain(self, xs: Sequence[np.ndarray], attrs: "Attrs"
                        ) -> list[tuple[Any, Any]]:
        """Where the op is defined on ``xs``: (term, condition) pairs, meaning every value
        computed from ``term`` is defined only when ``condition`` holds (default: always
        defined). The verifier compares a rule's outputs only where the original (its lhs) is
        defined: where it is undefined (a softmax row of -inf only gives NaN) the rewrite may
        give anything."""
        return []

    # ---- cost ----------------------------------------------------------------------------
    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: "Attrs") -> Cost:
        """Default: memory-bound op touching its inputs and outputs once, one flop per output."""
        b = sum(_nbytes(t) for t in in_types) + sum(_nbytes(t) for t in out_types)
        f = sum(_numel(t) for t in out_types)
        return Cost(float(f), float(b), 1)

    def reduced_axes(self, rank: int, attrs: "Attrs") -> tuple[int, ...]:
        """Reductions: the input axes one row spans (the cost model fuses a reduction only
        when a row fits on chip)."""
        raise NotImplementedError(f"{self.name}.reduced_axes")

    def index_bound(self, pos: int, in_types: tuple[ValueType, ...], attrs: "Attrs"
                    ) -> "Dim | None":
        """When input ``pos`` holds indices into another input (gather's indices), the
        exclusive upper bound of its values (a dim of that input); None otherwise. The check's
        input generator draws such inputs in [0, bound) (graphopt.inputs)."""
        return None

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: "Attrs"
                   ) -> "tuple[tuple[int, int], ...] | None":
        """The (input index, axis) pairs along which one output element reads more than one
        index of that input, or moves data to another index (a sum over the axis, a concat,
        slice or pad along it, a convolution window): the KV-cache legality analysis
        (``graphopt.kv``) refuses a model that does this along the sequence axis anywhere but
        in causal attention. () for ops that read every input at the output's own index
        (pointwise with broadcasting, views); None when not declared (refused as unknown)."""
        if self.cost_class in ("source", "pointwise", "view"):
            return ()
        if self.cost_class == "reduction" and in_types and isinstance(in_types[0], TensorType) \
                and in_types[0].shape is not None:
            rank = len(in_types[0].shape)
            return tuple((0, a % rank) for a in self.reduced_axes(rank, attrs)) if rank else ()
        return None

    def split_axes(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
                   attrs: "Attrs", axis: int) -> "tuple[int | None, ...] | None":
        """Blockwise computation (tensor parallelism, ``passes/tensor_parallel.py``): when output
        0 is cut into equal blocks along ``axis``, the axis of each input that is cut with it
        (None: that input is read whole, it is broadcast along the axis), or None when a block
        of the output needs more than the matching blocks of the inputs. Default: elementwise
        ops and ops that keep input 0's shape and read it only at the output's own index along
        ``axis`` (``mixed_axes``), their other inputs aligned as numpy broadcasts them."""
        if len(out_types) != 1 or not isinstance(out_types[0], TensorType) \
                or out_types[0].shape is None:
            return None
        ro = len(out_types[0].shape)
        if not self.elementwise:
            mixed = self.mixed_axes(in_types, attrs)
            if (mixed is None or not in_types or in_types[0] != out_types[0]
                    or (0, axis) in mixed):
                return None
        out: list[int | None] = []
        for t in in_types:
            if not isinstance(t, TensorType) or t.shape is None:
                return None
            k = axis - (ro - len(t.shape))
            out.append(None if k < 0 or t.shape[k] == 1 else k)
        return tuple(out)

    # ---- fingerprint -----------------------------------------------------------------------
    def fingerprint(self, xs: Sequence[np.ndarray], attrs: "Attrs") -> tuple[np.ndarray, ...]:
        """Semantics over int64 residues mod ``residues.P`` (outputs reduced mod P)."""
        from . import residues as r

        if self.standin is not None:
            return (r.cubic(self.standin)(xs[0]),)
        if self.ordered:
            ys = self.numpy([r.to_signed(x).astype(np.float64) for x in xs], attrs)
            return tuple(r.modp(np.rint(y).astype(np.int64)) for y in ys)
        if not self.exact_int:
            raise NotFingerprinted(f"op {self.name} has no mod-{r.P} semantics (declare "
                                   f"exact_int, ordered or standin, or override fingerprint)")
        out = []
        for y in self.numpy(list(xs), attrs):
            y = np.asarray(y)
            if y.dtype.kind == "f":  # an op computing in floats: exact while |y| < 2**53
                y = np.rint(y).astype(np.int64)
            out.append(r.modp(y))
        return tuple(out)

    @property
    def fingerprinted(self) -> bool:
        """Whether ``fingerprint`` is defined for this op."""
        return (self.exact_int or self.ordered or self.standin is not None
                or type(self).fingerprint is not OpDef.fingerprint)

    # ---- Triton ----------------------------------------------------------------------------
    def triton_expr(self, xs: Sequence[str], node: "Node") -> str:
        """Triton source of ``node``'s value over operand expressions ``xs`` (fp32 values, or
        int1 for bool operands); raises NotGenerated for forms it has none for."""
        if self.triton_format is None:
            raise NotGenerated(f"op {self.name} has no Triton expression")
        return self.triton_format.format(*xs)

    @property
    def has_triton_expr(self) -> bool:
        return (self.triton_format is not None
                or type(self).triton_expr is not OpDef.triton_expr)

    # ---- frontends and exporter ----------------------------------------------------------
    def from_onnx(self, ctx: Any) -> "Sequence[Any] | None":
        """Lift one ONNX node (``ctx``: frontends.onnx_lift.ImportCtx) into IR values, one per ONNX
        output; return None (or raise Unsupported(reason)) to keep the node opaque.

        Default: ONNX inputs map 1:1 onto this op's inputs and the node has no attributes."""
        if ctx.attrs or any(v is None for v in ctx.inputs):
            raise Unsupported(f"{ctx.op_type} with attributes {sorted(ctx.attrs)}")
        return ctx.build(self.name, ctx.inputs).node.outputs

    def to_onnx(self, ctx: Any, node: Any) -> None:
        """Emit ONNX nodes computing ``node`` (``ctx``: frontends.onnx_export.ExportCtx).
        Default: one node of type ``onnx[0]`` over the same inputs, no attributes."""
        if not self.onnx:
            from ..errors import ExportError

            raise ExportError(f"op {self.name} has no ONNX mapping")
        ctx.emit(self.onnx[0], [ctx.name(v) for v in node.inputs], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        """Lift one aten call (``ctx``: frontends.fx_aten.AtenCtx) into IR values.
        Default: the tensor positional args map 1:1 onto this op's inputs."""
        return ctx.build(self.name, ctx.tensor_args())

    # ---- samples -------------------------------------------------------------------------
    def examples(self, rng: np.random.Generator) -> list[Example]:
        return []

    def __repr__(self) -> str:
        return f"<op {self.name}>"


def _where(name: str, origin: "Origin | None") -> str:
    return f"op {name}" + (f" at {origin}" if origin else "")


SYM_DEFAULT = 8  # symbolic dims count as this size in cost estimates


def _numel(t: ValueType) -> int:
    return t.static_numel(SYM_DEFAULT) if isinstance(t, TensorType) else 1


def _nbytes(t: ValueType) -> float:
    return _numel(t) * t.dtype.itemsize if isinstance(t, TensorType) else 8.0


numel = _numel
nbytes = _nbytes

_REGISTRY: dict[str, OpDef] = {}
_BY_ONNX: dict[str, list[OpDef]] = {}
_BY_ATEN: dict[str, list[OpDef]] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator: register one op (its name must be new)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY:
        raise ValueError(f"op {cls.name!r} declared twice")
    inst = cls()
    _REGISTRY[cls.name] = inst
    for t in cls.onnx:
        _BY_ONNX.setdefault(t, []).append(inst)
    for t in cls.aten:
        _BY_ATEN.setdefault(t, []).append(inst)
    return cls


def _ensure_loaded() -> None:
    if not _REGISTRY:
        from . import ALL_FAMILIES  # noqa: F401  (importing registers every family)


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)


def ops_for_onnx(op_type: str) -> list[OpDef]:
    _ensure_loaded()
    return list(_BY_ONNX.get(op_type, ()))


def ops_for_aten(target: str) -> list[OpDef]:
    _ensure_loaded()
    return list(_BY_ATEN.get(target, ()))


def onnx_opset_needed(ops: Iterable[str]) -> int:
    """The default-domain ONNX opset at which every op of ``ops`` exports as one node of its
    own (``onnx_min_opset``; 0 when none needs more than any opset has)."""
    return max((get_op(op).onnx_min_opset or 0 for op in ops), default=0)


def onnx_opset_required(nodes: Iterable[Any]) -> int:
    """The lowest default-domain ONNX opset at which every node has an ONNX form at all
    (``OpDef.onnx_opset_for``: e.g. pad mode wrap needs 19); 0 when any opset will do."""
    return max((get_op(n.op).onnx_opset_for(n.attrs) for n in nodes), default=0)


# ---- helpers shared by op families ------------------------------------------------------------

def tensor_types(name: str, in_types: Sequence[ValueType]) -> list[TensorType]:
    out = []
    for i, t in enumerate(in_types):
        if not isinstance(t, TensorType):
            raise ShapeError(f"{name}: input {i} is {t}, not a tensor")
        out.append(t)
    return out


def broadcast_shapes(name: str, *shapes: tuple) -> tuple:
    """Numpy broadcasting over int or symbolic dims."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        d = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif x != d:
                raise ShapeError(f"{name}: shapes {' and '.join(str(list(s)) for s in shapes)} "
                                 f"do not broadcast (dim {i}: {d} vs {x})")
        out.append(d)
    return tuple(out)


def norm_axis(name: str, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{name}: axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def same_dtype(name: str, ts: Sequence[TensorType]) -> DType:
    dts = {t.dtype for t in ts}
    if len(dts) != 1:
        raise ShapeError(f"{name}: inputs have different dtypes "
                         f"{', '.join(str(t) for t in ts)}")
    return ts[0].dtype


ImportFn = Callable[..., Any]
