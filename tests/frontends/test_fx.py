"""Tests of the PyTorch frontend (graphopt.frontends.fx)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.errors import FrontendError, GraphOptError
from graphopt.frontends.fx import const_to_tensor, from_module, tensor_to_const
from graphopt.frontends.fx_aten import AtenCtx
from graphopt.frontends.fx_opaque import call_opaque_aten
from graphopt.frontends.torch_export import to_callable
from graphopt.ir.graph import Graph
from graphopt.ir.node import Attrs, Value
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.ops.registry import OpDef, Unsupported

# torch.export warns about its own pytree internals (LeafSpec)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _run(g: Graph, *xs: torch.Tensor) -> tuple:
    with torch.no_grad():
        out = to_callable(g)(*xs)
    return out if isinstance(out, tuple) else (out,)


def _ops(g: Graph) -> list[str]:
    return [n.op if n.op != "opaque" else f"opaque:{n.attrs['op_type']}" for n in g.nodes]


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x)) + 1.0


def test_inputs_constants_outputs_and_origin() -> None:
    m = Mlp().eval()
    x = torch.randn(2, 4)
    g = from_module(m, (x,))
    verify(g)
    assert g.input_names == ("x",)
    assert g.input_types == (TensorType((2, 4), DType.f32),)
    assert g.output_names == ("out0",)
    assert g.output_types == (TensorType((2, 3), DType.f32),)
    consts = [n for n in g.nodes if n.op == "constant"]
    datas = [n.const.array for n in consts]
    assert any(d.shape == (3, 4) and np.array_equal(d, m.lin.weight.detach().numpy())
               for d in datas)
    relu = next(n for n in g.nodes if n.op == "relu")
    assert relu.origin is not None and relu.origin.source == "fx"
    assert "test_fx.py" in relu.origin.detail and "torch.relu" in relu.origin.detail
    (got,) = _run(g, x)
    assert _rel(got, m(x).detach()) < 1e-6
    # a single-tensor module gives a single tensor back
    assert isinstance(to_callable(g)(x), torch.Tensor)


class Cumsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1, dtype=torch.float64)


def test_unmapped_aten_op_is_opaque_and_round_trips() -> None:
    x = torch.randn(2, 5)
    g = from_module(Cumsum(), (x,))
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert n.attrs["domain"] == "aten"
    assert n.attrs["op_type"] == "aten.cumsum.default"
    assert n.attrs["proto"] is None
    assert n.out_types == (TensorType((2, 5), DType.f64),)
    call = json.loads(n.attrs["call"])
    assert call["args"] == [{"$t": 0}, 1]
    assert call["kwargs"] == {"dtype": {"$dtype": "float64"}}
    (got,) = _run(g, x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.cumsum(x, 1, dtype=torch.float64))
    # the op's own torch semantics re-dispatch through call_opaque_aten
    (direct,) = call_opaque_aten([x], n.attrs)
    torch.testing.assert_close(direct, got)


def test_opaque_op_runs_aten_nodes_through_the_runner_the_frontend_registered() -> None:
    from graphopt.ops.opaque import _RUNNERS
    from graphopt.ops.registry import get_op

    assert _RUNNERS["aten"] is call_opaque_aten
    attrs = Attrs({"op_type": "x.y.z", "domain": "elsewhere", "proto": None,
                   "out_types": (TensorType((2,), DType.f32),)})
    with pytest.raises(GraphOptError, match="no run-time semantics registered"):
        get_op("opaque").torch([torch.zeros(2)], attrs)


class TopK(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, i = torch.topk(x, 2)
        return torch.relu(v), i


def test_multi_output_getitem() -> None:
    x = torch.randn(3, 6)
    g = from_module(TopK(), (x,))
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert n.attrs["op_type"] == "aten.topk.default"
    assert len(n.out_types) == 2
    relu = next(m for m in g.nodes if m.op == "relu")
    assert relu.inputs[0] == Value(n, 0)
    assert g.outputs[1] == Value(n, 1)
    assert g.output_types[1] == TensorType((3, 2), DType.i64)
    v, i = _run(g, x)
    rv, ri = torch.topk(x, 2)
    torch.testing.assert_close(v, torch.relu(rv))
    assert torch.equal(i, ri)


class MaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, 2)


def test_used_outputs_seen_by_from_aten(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, set[int]]] = []

    class Spy(OpDef):
        name = "spy"

        def from_aten(self, ctx: AtenCtx) -> Value:
            seen.append((ctx.num_outputs, ctx.used_outputs))
            raise Unsupported("spying only")

    import graphopt.ops.registry as reg  # fx looks mappings up here on each call

    orig = reg.ops_for_aten
    monkeypatch.setattr(reg, "ops_for_aten", lambda t: [Spy()] if "max_pool2d" in t
                        else orig(t))
    x = torch.randn(1, 2, 4, 4)
    g = from_module(MaxPool(), (x,))
    assert seen == [(2, {0})]
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert "kept opaque: spy: spying only" in n.origin.detail
    (got,) = _run(g, x)
    torch.testing.assert_close(got, nn.functional.max_pool2d(x, 2))


def test_mapping_with_wrong_type_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bad(OpDef):
        name = "bad"

        def from_aten(self, ctx: AtenCtx) -> Value:
            return ctx.tensor_args()[0]  # ignores the dtype change

    import graphopt.ops.registry as reg

    orig = reg.ops_for_aten
    monkeypatch.setattr(reg, "ops_for_aten",
                        lambda t: [Bad()] if "cumsum" in t else orig(t))
    with pytest.raises(FrontendError, match=r"cumsum.*bad.from_aten gives f32\[2,5\].*"
                                            r"torch says f64\[2,5\]"):
        from_module(Cumsum(), (torch.randn(2, 5),))


class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.0, 2.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], dtype=torch.float32)
        return x * (torch.cumsum(pos, 0) * self.scale)


def test_buffer_and_factory_subgraphs_fold_to_constants() -> None:
    x = torch.randn(2, 3)
    g = from_module(WithBuffers(), (x,))
    assert _ops(g) == ["input", "constant", "mul"]
    c = next(n for n in g.nodes if n.op == "constant")
    np.testing.assert_allclose(c.const.array, [0.0, 2.0, 9.0])
    (got,) = _run(g, x)
    torch.testing.assert_close(got, WithBuffers()(x))


class Passthrough(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.clone().detach())


def test_passthrough_ops_vanish() -> None:
    g = from_module(Passthrough(), (torch.randn(3),))
    assert _ops(g) == ["input", "relu"]


def test_symbolic_trace_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*a: object, **k: object) -> None:
        raise RuntimeError("export refused")

    monkeypatch.setattr(torch.export, "export", no_export)
    m = Mlp().eval()
    x = torch.randn(2, 4)
    g = from_module(m, (x,))
    verify(g)
    assert g.meta.source == "torch.fx.symbolic_trace:Mlp"
    assert g.input_names == ("x",)
    assert "relu" in _ops(g)
    (got,) = _run(g, x)
    assert _rel(got, m(x).detach()) < 1e-6
    # the same parameter used twice is one constant
    g2 = from_module(Tied(), (x,))
    assert sum(1 for n in g2.nodes if n.op == "constant" and n.const.shape == (4, 4)) == 1
    (got2,) = _run(g2, x)
    torch.testing.assert_close(got2, Tied()(x))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w) @ self.w


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def test_error_when_export_and_symbolic_trace_both_fail() -> None:
    with pytest.raises(FrontendError) as e:
        from_module(DataDependent(), (torch.randn(3),))
    msg = str(e.value)
    assert "module DataDependent" in msg
    assert "torch.export failed" in msg and "symbolic_trace failed" in msg


def test_dynamic_batch() -> None:
    m = Mlp().eval()
    g = from_module(m, (torch.randn(2, 4),), dynamic=True)
    verify(g)
    assert g.input_types == (TensorType(("batch", 4), DType.f32),)
    assert g.output_types == (TensorType(("batch", 3), DType.f32),)
    x = torch.randn(5, 4)
    (got,) = _run(g, x)
    assert _rel(got, m(x).detach()) < 1e-6


class TwoSeq(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the add makes torch.export prove both batch dims equal: one symbol "n"
        return torch.relu(a), b + a.sum(1, keepdim=True)


class Mlp2(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(a), torch.relu(b)


def test_dynamic_named_axes() -> None:
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    g = from_module(TwoSeq(), (a, b), dynamic={"a": {0: "n", 1: "s"}, "b": {0: "n", 1: "t"}})
    assert g.input_types == (TensorType(("n", "s"), DType.f32),
                             TensorType(("n", "t"), DType.f32))
    assert g.output_types == g.input_types
    (got_a, got_b) = _run(g, torch.ones(4, 2), torch.ones(4, 7))
    assert got_b.shape == (4, 7) and float(got_b[0, 0]) == 3.0
    # independent dims keep independent symbols (the second "n" is renamed)
    g2 = from_module(Mlp2(), (a, b), dynamic={"a": {0: "n"}, "b": {0: "n"}})
    assert g2.input_types == (TensorType(("n", 3), DType.f32), TensorType(("n_b", 5), DType.f32))
    with pytest.raises(FrontendError, match="unknown inputs"):
        from_module(TwoSeq(), (a, b), dynamic={"c": {0: "n"}})


def test_bf16_constant_kept_faithfully() -> None:
    t = torch.randn(3, 2).to(torch.bfloat16)
    data = tensor_to_const(t)
    assert data.dtype == DType.bf16 and data.shape == (3, 2) and not data.has_array
    back = const_to_tensor(data)
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)


def test_nested_outputs_keep_their_structure() -> None:
    class Nested(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, object]:
            return {"a": torch.relu(x), "b": [x + 1.0, torch.relu(x)]}

    x = torch.randn(3)
    g = from_module(Nested(), (x,))
    assert len(g.outputs) == 3
    with torch.no_grad():
        out = to_callable(g)(x)
    assert set(out) == {"a", "b"} and isinstance(out["b"], list)
    torch.testing.assert_close(out["b"][0], x + 1.0)


class TwoIndex(nn.Module):
    def forward(self, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return x[:, i, j] + x[:, i[:1, None], torch.tensor([[0, -1, 2]])]


def test_advanced_indexing_with_several_index_tensors() -> None:
    x = torch.randn(2, 4, 5, 3)
    i = torch.tensor([[0, -1, 2]])
    j = torch.tensor([[4], [-2]])
    g = from_module(TwoIndex(), (x, i, j))
    assert not [n for n in g.nodes if n.op == "opaque"]
    assert "gather" in _ops(g)
    (got,) = _run(g, x, i, j)
    torch.testing.assert_close(got, TwoIndex()(x, i, j))


class AddPositions(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[1], dtype=torch.float32)


def test_dynamic_size_in_an_opaque_call_is_read_at_run_time() -> None:
    g = from_module(AddPositions(), (torch.zeros(2, 5),), dynamic=True)
    assert g.input_types == (TensorType(("batch", "seq"), DType.f32),)
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert n.attrs["op_type"] == "aten.arange.start_step"
    assert {"$dim": "seq"} in json.loads(n.attrs["call"])["args"]
    for shape in ((2, 5), (3, 7)):
        x = torch.randn(*shape)
        (got,) = _run(g, x)
        torch.testing.assert_close(got, AddPositions()(x))


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add_(x)
        return torch.relu(x)


def test_state_mutation_is_refused() -> None:
    with pytest.raises(FrontendError, match="mutates state.*buffer_mutation seen"):
        from_module(Counter(), (torch.randn(3),))


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.relu(x) * k


def test_non_tensor_inputs_are_baked_in() -> None:
    x = torch.randn(3)
    g = from_module(Scaled(), (x, 3))
    assert g.input_names == ("x",)
    (got,) = _run(g, x)
    torch.testing.assert_close(got, torch.relu(x) * 3)


class NamedTuples(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return torch.topk(x, 2), {"max": x.max(dim=1), "sort": [torch.sort(x, dim=0)]}


def test_named_tuple_outputs_keep_their_type() -> None:
    """torch.return_types outputs (topk, max with dim, sort) come back as the same named tuples
    (torch's treespec_dumps cannot write them)."""
    from graphopt.frontends.fx_outputs import structure_diff

    x = torch.randn(3, 5)
    g = from_module(NamedTuples(), (x,))
    with torch.no_grad():
        got, want = to_callable(g)(x), NamedTuples()(x)
    assert structure_diff(want, got) is None
    assert type(got[0]) is torch.return_types.topk and type(got[1]["max"]) is torch.return_types.max
    assert type(got[1]["sort"][0]) is torch.return_types.sort
    torch.testing.assert_close(got[0].values, want[0].values)
    torch.testing.assert_close(got[1]["max"].indices, want[1]["max"].indices)


class Inverse(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return torch.linalg.inv(x), torch.linalg.lu_factor_ex(x)


def test_effect_tokens_of_assertions_are_dropped() -> None:
    """linalg's error checks run under torch.export's effect tokens (with_effects): the token is
    no graph input or output, the check is dropped like the other assertions."""
    x = torch.randn(4, 4) + 4 * torch.eye(4)
    g = from_module(Inverse(), (x,))
    assert g.input_names == ("x",) and len(g.outputs) == 4
    with torch.no_grad():
        inv, lu = to_callable(g)(x)
    torch.testing.assert_close(inv, torch.linalg.inv(x))
    assert type(lu) is torch.return_types.linalg_lu_factor_ex


class Printing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten._print("hello")
        return x + 1


def test_other_effectful_calls_are_refused() -> None:
    with pytest.raises(FrontendError, match="effectful call aten._print.default"):
        from_module(Printing(), (torch.randn(2),))


class Conjugate(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return torch.view_as_real(x.conj().resolve_conj()), x.conj(), torch.fft.ifft(x)


def test_conjugate_views_are_values() -> None:
    """``aten._conj`` makes a lazy view; the IR's value is the conjugate itself, so a later
    view_as_real (torch refuses unresolved views) and the check's numpy reads work."""
    import graphopt

    x = torch.randn(4, dtype=torch.complex64)
    om = graphopt.optimize(Conjugate(), (x,), budget=0)  # its check reads every output
    real, conj, ifft = om(x)
    torch.testing.assert_close(real, torch.view_as_real(x.conj().resolve_conj()))
    torch.testing.assert_close(conj.resolve_conj(), x.conj().resolve_conj())
    torch.testing.assert_close(ifft.resolve_conj(), torch.fft.ifft(x).resolve_conj())


class ZeroDim(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return x.sum(), torch.complex(x.max(), x.min()), torch.cat([x[:0], x])


def test_zero_dim_and_complex_scalar_outputs() -> None:
    import graphopt

    x = torch.randn(3)
    om = graphopt.optimize(ZeroDim(), (x,), budget=0)  # the check compares a 0-d complex
    s, c, cat = om(x)
    assert s.shape == () and c.shape == () and c.dtype == torch.complex64
    torch.testing.assert_close(cat, x)


class SparseMM(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(a, b)


def test_sparse_inputs_are_refused_naming_the_input() -> None:
    a = torch.randn(3, 3).to_sparse()
    with pytest.raises(FrontendError, match="input a is a sparse_coo tensor.*to_dense"):
        from_module(SparseMM(), (a, torch.randn(3, 2)))


class Positions(nn.Module):
    def forward(self) -> torch.Tensor:
        return torch.arange(6, dtype=torch.float32).reshape(2, 3)


def test_module_without_tensor_inputs_lifts_to_constants() -> None:
    g = from_module(Positions(), ())
    assert g.input_names == ()
    with torch.no_grad():
        got = to_callable(g)()
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, Positions()())


def test_module_without_tensor_inputs_returns_tensors() -> None:
    import graphopt

    om = graphopt.optimize(Positions(), (), budget=0)
    got = om()
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, Positions()())


class Positive(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x > 0)


class ItemScale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.max().item()


def test_data_dependent_sizes_and_items_are_refused_in_one_line() -> None:
    with pytest.raises(FrontendError, match="data-dependent size .* nonzero") as e:
        from_module(Positive(), (torch.randn(5),))
    assert "\n" not in e.value.one_line() and "module Positive" in e.value.one_line()
    with pytest.raises(FrontendError, match=r"read as a python float .*\.item\(\)"):
        from_module(ItemScale(), (torch.randn(5),))


class Box:
    """A pytree node type registered without a serialization name."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class Boxed(nn.Module):
    def forward(self, x: torch.Tensor) -> Box:
        return Box(x + 1)


def test_an_output_type_pytree_cannot_write_is_refused_naming_the_module() -> None:
    from torch.utils import _pytree as pytree

    if Box not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(Box, lambda b: ([b.t], None), lambda xs, _: Box(xs[0]))
    with pytest.raises(FrontendError, match="module Boxed: .*holds a Box, which torch's pytree "
                       "cannot serialize"):
        from_module(Boxed(), (torch.randn(2),))
