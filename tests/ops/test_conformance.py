"""One test runs every registered op (all families) through every aspect with its examples:
infer vs numpy types, torch vs numpy, z3 semantics vs numpy, cost, ONNX mapping declared, and
the ONNX export run in ONNX Runtime vs numpy."""
from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pytest

from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.node import Node, input_node
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import Example, NotSymbolic, OpDef, all_ops

SKIP = {"input", "opaque"}
EXPORT_OPSETS = (13, 18, 23)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _cases() -> list[Any]:
    out = []
    for name, op in sorted(all_ops().items()):
        if name in SKIP:
            continue
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

    # cost
    c = op.cost(tuple(n.out_types[0] for n in ins), node.out_types, node.attrs)
    for f in (c.flops, c.bytes, c.launches):
        assert math.isfinite(f) and f >= 0, f"{name}: cost {c}"

    # ONNX export runs in ONNX Runtime and matches numpy
    _check_onnx_export(op, ins, node, ex, want)
