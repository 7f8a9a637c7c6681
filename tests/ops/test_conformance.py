"""One test runs every registered op (all families) through every aspect with its examples:
infer vs numpy types, torch vs numpy, z3 semantics vs numpy, cost, ONNX mapping declared, the
ONNX export run in ONNX Runtime vs numpy, and the op's declarations (cost class, fingerprint
semantics, Triton expression, index pass-through, dim attrs) against its numpy semantics.
``test_op_declarations`` checks the declarations that span examples: they agree with each other,
associativity / commutativity hold, axioms hold, ``onnx_min_opset`` is the first opset exporting
the op as its own ONNX node."""
from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pytest

from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.node import Node, constant, input_node
from graphopt.ir.types import DType, TensorType
from graphopt.ops import residues
from graphopt.ops.registry import Example, NotFingerprinted, NotSymbolic, OpDef, all_ops
from graphopt.ops.symbolic import check_axiom

SKIP = {"input", "opaque"}
EXPORT_OPSETS = (13, 18, 23)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _names() -> list[str]:
    return [name for name in sorted(all_ops()) if name not in SKIP]


def _cases() -> list[Any]:
    out = []
    for name in _names():
        op = all_ops()[name]
        try:
            n = len(op.examples(_rng(name)))
        except Exception as e:  # reported by the test itself
            out.append(pytest.param(name, -1, id=f"{name}-examples-error:{type(e).__name__}"))
            continue
        if n == 0:
            out.append(pytest.param(name, -1, id=f"{name}-no-examples"))
        out += [pytest.param(name, i, id=f"{name}-{i}") for i in range(n)]
    return out


def _example(name: str, i: int) -> tuple[OpDef, Example]:
    op = all_ops()[name]
    exs = op.examples(_rng(name))
    assert i >= 0 and exs, f"op {name} declares no examples (or examples() fails)"
    return op, exs[i]


def _build(name: str, ex: Example) -> tuple[list[Node], Node]:
    ins = [input_node(f"x{k}", TensorType(tuple(a.shape), DType.from_numpy(a.dtype)))
           for k, a in enumerate(ex.inputs)]
    return ins, Node.build(name, [n.out for n in ins], ex.attrs)


def _close(got: np.ndarray, want: np.ndarray, ex: Example, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype == bool or want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=ex.rtol, atol=ex.atol, equal_nan=True, err_msg=what)


# ---- z3 ----------------------------------------------------------------------------------------

def _z3_inputs(arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[Any, Any]]]:
    import z3

    syms, subst = [], []
    for k, a in enumerate(arrays):
        s = np.empty(a.shape, dtype=object)
        for idx in np.ndindex(a.shape):
            nm = f"x{k}_{'_'.join(map(str, idx))}"
            v = a[idx]
            if a.dtype == bool:
                var, val = z3.Bool(nm), z3.BoolVal(bool(v))
            elif a.dtype.kind in "iu":
                var, val = z3.Int(nm), z3.IntVal(int(v))
            else:
                var, val = z3.Real(nm), z3.RealVal(float(v))
            s[idx] = var
            subst.append((var, val))
        syms.append(s)
    return syms, subst


def _has_uf(e: Any) -> bool:
    import z3

    todo, seen = [e], set()
    while todo:
        t = todo.pop()
        if not z3.is_app(t) or t.get_id() in seen:
            continue
        seen.add(t.get_id())
        if t.decl().kind() == z3.Z3_OP_UNINTERPRETED and t.num_args() > 0:
            return True
        todo.extend(t.children())
    return False


def _z3_value(e: Any) -> "float | bool | None":
    import z3

    if z3.is_true(e):
        return True
    if z3.is_false(e):
        return False
    if z3.is_int_value(e):
        return float(e.as_long())
    if z3.is_rational_value(e):
        return float(e.as_fraction())
    if z3.is_algebraic_value(e):
        return float(e.approx(20).as_fraction())
    return None


def _check_symbolic(op: OpDef, node: Node, ex: Example, want: tuple[np.ndarray, ...]) -> None:
    import z3

    syms, subst = _z3_inputs([np.asarray(a) for a in ex.inputs])
    try:
        outs = op.symbolic(syms, node.attrs)
    except NotSymbolic as e:
        pytest.fail(f"{op.name}: symbolic raised NotSymbolic ({e}) on an example marked "
                    f"symbolic=True")
    assert len(outs) == len(want), f"{op.name}: symbolic gives {len(outs)} outputs"
    for k, (o, w) in enumerate(zip(outs, want)):
        o = np.asarray(o, dtype=object)
        assert o.shape == w.shape, f"{op.name} output {k}: symbolic shape {o.shape} != {w.shape}"
        for idx in np.ndindex(o.shape):
            e = o[idx]
            if not z3.is_expr(e):
                got: Any = e if isinstance(e, (bool, np.bool_)) else float(e)
            else:
                r = z3.simplify(z3.substitute(e, *subst)) if subst else z3.simplify(e)
                if _has_uf(r):
                    continue  # uninterpreted functions: built, not evaluated
                got = _z3_value(r)
                assert got is not None, f"{op.name} output {k}{list(idx)}: z3 left {r}"
            wv = w[idx]
            if w.dtype == bool:
                assert bool(got) == bool(wv), f"{op.name} output {k}{list(idx)}: z3 {got} != {wv}"
            elif math.isfinite(float(wv)):
                tol = ex.atol + ex.rtol * abs(float(wv))
                assert abs(float(got) - float(wv)) <= tol * 4 + 1e-9, \
                    f"{op.name} output {k}{list(idx)}: z3 {got} != numpy {wv}"


# ---- ONNX export -------------------------------------------------------------------------------

def _check_onnx_export(op: OpDef, ins: list[Node], node: Node, ex: Example,
                       want: tuple[np.ndarray, ...]) -> None:
    try:
        from graphopt.frontends.onnx_export import to_model
    except ImportError as e:
        pytest.skip(f"ONNX exporter not importable yet: {e}")
    import onnxruntime as ort

    from graphopt.errors import ExportError

    exported = 0
    reasons: list[str] = []
    no_kernel = False
    for opset in EXPORT_OPSETS:
        g = Graph(ins, list(node.outputs), meta=GraphMeta(opsets=(("", opset),)))
        try:
            m = to_model(g, opset=opset)
        except ExportError as e:
            reasons.append(f"opset {opset}: {e.one_line()}")
            continue
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(m.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT lacks a kernel for this type / opset: not the op's fault
            if "NOT_IMPLEMENTED" in str(e) or "Could not find an implementation" in str(e):
                reasons.append(f"opset {opset}: ORT has no kernel: {str(e)[:200]}")
                no_kernel = True
                continue
            raise
        feeds = {n.attrs["name"]: np.asarray(a) for n, a in zip(ins, ex.inputs)}
        got = sess.run(None, feeds)
        for k, (gv, wv) in enumerate(zip(got, want)):
            assert np.asarray(gv).dtype == wv.dtype, f"onnx opset {opset} output {k} dtype"
            _close(gv, wv, ex, f"{op.name}: ONNX Runtime (opset {opset}) output {k}")
        exported += 1
    if not exported:
        if op.onnx and not no_kernel:
            pytest.fail(f"{op.name} declares ONNX {op.onnx} but no export worked: {reasons}")
        pytest.skip(f"{op.name}: not exportable here: {reasons}")


# ---- declarations vs semantics, per example -----------------------------------------------------

def _values(arrays: "list[np.ndarray] | tuple[np.ndarray, ...]") -> set[float]:
    return {float(v) for a in arrays for v in np.asarray(a, dtype=np.float64).ravel()}


def _check_view(op: OpDef, ex: Example, want: tuple[np.ndarray, ...]) -> None:
    """cost_class "view": every output is input 0's data, reshaped (no kernel, an alias)."""
    x = np.asarray(ex.inputs[0])
    for k, w in enumerate(want):
        assert w.dtype == x.dtype and w.size == x.size and np.array_equal(w, x.reshape(w.shape)), \
            f"{op.name} declares cost_class 'view' but output {k} is not a reshape of input 0"


def _check_injective(op: OpDef, node: Node, ex: Example, want: tuple[np.ndarray, ...]) -> None:
    """cost_class "injective": data movement, every output value is an input value (or a fill
    value given as an attribute)."""
    allowed = _values(ex.inputs) | {float(v) for v in node.attrs.values()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra = _values(want) - allowed
    assert not extra, (f"{op.name} declares cost_class 'injective' but computes values "
                       f"{sorted(extra)[:5]} that are not among its inputs")


def _check_index_pass_through(op: OpDef, node: Node, ex: Example) -> None:
    """index_pass_through: integer values (indices) reach the outputs unchanged."""
    if any(np.asarray(a).dtype == bool for a in ex.inputs) or any(
            t.dtype == DType.bool for t in node.out_types):  # type: ignore[union-attr]
        return
    rng = np.random.default_rng(7)
    xs = [rng.integers(2, 100, np.shape(a)).astype(np.asarray(a).dtype) for a in ex.inputs]
    extra = _values(op.numpy(xs, node.attrs)) - _values(xs)
    assert not extra, (f"{op.name} declares index_pass_through but maps integer inputs to "
                       f"{sorted(extra)[:5]}")


def _residues(ex: Example) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, residues.P, np.shape(a), dtype=np.int64) for a in ex.inputs]


def _exact_mod_p(y: Any) -> np.ndarray:
    """Exact integer results (Python ints) reduced mod P; -1 where a result is not an integer."""
    def red(v: Any) -> int:
        return int(v) % residues.P if float(v) == int(v) else -1

    return np.vectorize(red, otypes=[np.int64])(np.asarray(y, dtype=object)) if np.size(y) \
        else np.zeros(np.shape(y), np.int64)


def _check_fingerprint(op: OpDef, node: Node, ex: Example) -> None:
    """exact_int: the fingerprint equals the exact integer result (numpy on Python ints) mod P;
    ordered: the numpy aspect gives integers on the signed representatives (so nothing is
    lost to rounding)."""
    if not (op.exact_int or op.ordered):
        return
    xs = _residues(ex)
    try:
        got = op.fingerprint(xs, node.attrs)
    except NotFingerprinted:
        return  # the op declines this form (e.g. pad with a fractional fill value)
    if op.exact_int:
        exact = op.numpy([x.astype(object) for x in xs], node.attrs)
        for k, (g, w) in enumerate(zip(got, exact)):
            assert np.array_equal(residues.modp(g), _exact_mod_p(w)), \
                f"{op.name} declares exact_int but output {k} is not exact mod P"
    if op.ordered:  # on residues and on small values (where nothing underflows)
        small = [np.random.default_rng(13).integers(-3, 4, x.shape) for x in xs]
        for signed in ([residues.to_signed(x) for x in xs], small):
            ys = op.numpy([x.astype(np.float64) for x in signed], node.attrs)
            for k, y in enumerate(ys):
                y = np.asarray(y, dtype=np.float64)
                assert np.array_equal(y, np.rint(y)) and np.all(np.abs(y) < 2.0 ** 53), \
                    f"{op.name} declares ordered but output {k} is not an exact integer"


class _TL:
    """The triton.language builtins Triton expressions use, with numpy semantics."""

    exp, log, sqrt, abs, sin, cos = np.exp, np.log, np.sqrt, np.abs, np.sin, np.cos
    floor, ceil, maximum, minimum, where = np.floor, np.ceil, np.maximum, np.minimum, np.where
    erf = staticmethod(np.vectorize(math.erf, otypes=[np.float64]))

    @staticmethod
    def rsqrt(x: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(x)


def _check_triton_expr(op: OpDef, ex: Example, want: tuple[np.ndarray, ...]) -> None:
    """The op's Triton expression, evaluated with numpy on the example (fp64 for floats, as
    kernels compute in fp32), equals the op's numpy semantics."""
    from graphopt.codegen.triton.exprs import fusible

    if not op.has_triton_expr:
        return
    ins = [constant(np.asarray(a)) if np.ndim(a) == 0 and np.asarray(a).dtype.kind == "f" else
           input_node(f"x{k}", TensorType(tuple(np.shape(a)), DType.from_numpy(np.asarray(a).dtype))
                      ).out for k, a in enumerate(ex.inputs)]
    node = Node.build(op.name, ins, ex.attrs)
    if fusible(node) is not None:
        return  # not generated for these dtypes / this form
    names = [f"x{k}" for k in range(len(ex.inputs))]
    expr = op.triton_expr(names, node)
    env = {n: (a if np.asarray(a).dtype == bool else np.asarray(a, np.float64))
           for n, a in zip(names, ex.inputs)}
    with np.errstate(all="ignore"):
        got = np.asarray(eval(expr, {"tl": _TL, "__builtins__": {}}, env))  # noqa: S307
    _close(np.broadcast_to(got, want[0].shape), want[0], ex,
           f"{op.name}: Triton expression {expr!r} vs numpy")


def _check_dim_attrs(op: OpDef, node: Node) -> None:
    for a in op.dim_attrs:
        assert a in node.attrs, f"{op.name}: dim_attrs names {a!r}, not an attribute"
        v = node.attrs[a]
        assert all(isinstance(d, (int, str)) for d in (v if isinstance(v, tuple) else (v,))), \
            f"{op.name}: dim attr {a}={v!r} is not a dim or a tuple of dims"


def _check_declarations(op: OpDef, node: Node, ex: Example, want: tuple[np.ndarray, ...]) -> None:
    if op.cost_class == "view":
        _check_view(op, ex, want)
    if op.cost_class == "injective":
        _check_injective(op, node, ex, want)
    if op.index_pass_through:
        _check_index_pass_through(op, node, ex)
    if op.cost_class == "reduction":
        rank = np.ndim(ex.inputs[0])
        assert all(0 <= a < max(rank, 1) for a in op.reduced_axes(rank, node.attrs)), \
            f"{op.name}: reduced_axes out of range"
    _check_fingerprint(op, node, ex)
    _check_triton_expr(op, ex, want)
    _check_dim_attrs(op, node)


# ---- declarations across examples ---------------------------------------------------------------

COST_CLASSES = ("source", "view", "pointwise", "injective", "reduction", "heavy", "opaque",
                "collective")


def _float64(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True))


def _check_algebra(op: OpDef, exs: list[Example]) -> None:
    """commutative: op(a, b) == op(b, a); associative: op(op(a, b), c) == op(a, op(b, c)) for a
    third operand c shaped to fit (b, b transposed, or a), on every two-input example."""
    from graphopt.ir.node import Attrs

    def f(x: np.ndarray, y: np.ndarray, attrs: Attrs) -> np.ndarray:
        return np.asarray(op.numpy([x, y], attrs)[0])

    checked = 0
    for ex in exs:
        if len(ex.inputs) != 2:
            continue
        attrs = _build(op.name, ex)[1].attrs
        a, b = (_float64(x) for x in ex.inputs)
        if op.commutative:
            assert _same(f(a, b, attrs), f(b, a, attrs)), f"{op.name} is declared commutative"
        if not op.associative:
            continue
        for c in (b, np.swapaxes(b, -1, -2) if b.ndim >= 2 else None, a):
            try:
                left, right = f(f(a, b, attrs), c, attrs), f(a, f(b, c, attrs), attrs)
            except Exception:  # noqa: BLE001 - c does not fit: try the next one
                continue
            assert _same(left, right), f"{op.name} is declared associative"
            checked += 1
            break
    assert checked or not op.associative, f"{op.name}: no example to check associativity on"


def _onnx_types(name: str, ex: Example, opset: int) -> set[str]:
    from graphopt.errors import ExportError
    from graphopt.frontends.onnx_export import to_model

    ins, node = _build(name, ex)
    g = Graph(ins, list(node.outputs), meta=GraphMeta(opsets=(("", opset),)))
    try:
        return {n.op_type for n in to_model(g, opset=opset).graph.node}
    except ExportError:
        return set()


def _check_onnx_min_opset(op: OpDef, exs: list[Example]) -> None:
    """onnx_min_opset: from that opset the op exports as its own ONNX node, below it never."""
    k = op.onnx_min_opset
    if k is None:
        return
    for ex in exs:
        assert op.onnx[0] in _onnx_types(op.name, ex, k), \
            f"{op.name}: no {op.onnx[0]} node at its onnx_min_opset {k}"
        assert op.onnx[0] not in _onnx_types(op.name, ex, k - 1), \
            f"{op.name}: already a {op.onnx[0]} node at opset {k - 1} < onnx_min_opset {k}"


@pytest.mark.parametrize("name", _names())
def test_op_declarations(name: str) -> None:
    op = all_ops()[name]
    exs = op.examples(_rng(name))
    assert op.cost_class in COST_CLASSES, f"{name}: cost_class {op.cost_class!r}"
    if op.matrix_unit or op.triton_kernel in ("matmul", "attention"):
        assert op.cost_class == "heavy", f"{name}: matrix-unit / anchor ops are heavy"
    if op.triton_kernel == "reduction":
        assert op.cost_class == "reduction", f"{name}: a reduction kernel anchor is a reduction"
    if op.cpu_epilogue:
        assert op.elementwise and op.cost_class == "pointwise", f"{name}: epilogues are pointwise"
    assert all(0 <= i < (op.max_inputs or i + 1) for i in op.partial_read_inputs)
    # one fingerprint semantics: exact, ordered, a cubic stand-in (unary elementwise only)
    assert op.exact_int + op.ordered + (op.standin is not None) <= 1, f"{name}: fingerprint"
    if op.standin is not None:
        assert op.elementwise and op.max_inputs == 1, f"{name}: a stand-in is unary elementwise"
    # a Triton expression or the reason there is none, for elementwise ops on floats
    if op.has_triton_expr:
        assert op.elementwise and op.triton_missing is None, f"{name}: triton_expr"
    elif op.elementwise and any(np.asarray(a).dtype.kind == "f" for e in exs for a in e.inputs):
        assert op.triton_missing, f"{name}: set triton_format / triton_expr or triton_missing"
    # axioms: declared on the op whose numpy semantics they describe, and true there
    for ax in op.axioms:
        assert (ax.op or ax.fn) == name, f"{name}: axiom {ax.name} is about {ax.op or ax.fn}"
        assert check_axiom(ax) is None, check_axiom(ax)
    if op.commutative or op.associative:
        _check_algebra(op, exs)
    _check_onnx_min_opset(op, exs)


# ---- the test ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,i", _cases())
def test_op_conformance(name: str, i: int) -> None:
    import torch

    op, ex = _example(name, i)
    # every op declares an ONNX op type or why it has none
    assert op.onnx or op.onnx_missing, f"op {name}: set `onnx` or `onnx_missing` (the reason)"

    # infer: build the node; numpy outputs must have the inferred types
    ins, node = _build(name, ex)
    want = tuple(np.asarray(w) for w in op.numpy([np.asarray(a) for a in ex.inputs], node.attrs))
    assert len(want) == len(node.out_types)
    for k, (w, t) in enumerate(zip(want, node.out_types)):
        assert isinstance(t, TensorType)
        assert w.shape == tuple(t.shape), f"{name} output {k}: numpy {w.shape} vs inferred {t}"
        assert w.dtype == t.dtype.to_numpy(), f"{name} output {k}: numpy {w.dtype} vs {t}"

    # torch agrees with numpy
    targs = [torch.from_numpy(np.array(a)) for a in ex.inputs]
    got = op.torch(targs, node.attrs)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert isinstance(g, torch.Tensor), f"{name}: torch output {k} is {type(g).__name__}"
        assert DType.from_torch(g.dtype) == node.out_types[k].dtype, \
            f"{name}: torch dtype {g.dtype}"
        _close(g.detach().numpy(), w, ex, f"{name}: torch vs numpy, output {k}")

    # z3 semantics agree with numpy on the example's values
    if ex.symbolic:
        _check_symbolic(op, node, ex, want)

    # the op's declarations agree with its numpy semantics
    _check_declarations(op, node, ex, want)

    # cost
    c = op.cost(tuple(n.out_types[0] for n in ins), node.out_types, node.attrs)
    for f in (c.flops, c.bytes, c.launches):
        assert math.isfinite(f) and f >= 0, f"{name}: cost {c}"

    # ONNX export runs in ONNX Runtime and matches numpy
    _check_onnx_export(op, ins, node, ex, want)
