"""Generated rules firing on real graphs (numeric equivalence checked), plus driver basics."""
from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.text import parse
from graphopt.ir.verify import verify
from graphopt.rewrite.driver import apply, matches, rewrite, rewrites
from graphopt.rewrite.match import MatchFail
from graphopt.rewrite.trace import Tracer
from graphopt.rewrite.rule import from_subst
from graphopt.subst.rulefile import load_dir

SHIPPED = load_dir()


def _same(g: Graph, h: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    xs = {n: rng.standard_normal(t.shape) for n, t in zip(g.input_names, g.input_types)}
    for a, b in zip(run(g, **xs), run(h, **xs)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def _ops(g: Graph) -> dict[str, int]:
    return g.op_counts()


# one BERT layer's q/k/v projections (hidden 16, 2 heads of 8) and the attention scores
BERT = """graph bert(%h: f32[2,8,16], %wq: f32[16,16], %wk: f32[16,16], %wv: f32[16,16]) {
  %0: f32[2,8,16] = matmul(%h, %wq)
  %1: f32[2,8,16] = matmul(%h, %wk)
  %2: f32[2,8,16] = matmul(%h, %wv)
  %3: f32[2,16,8] = transpose(%1) {perm=(0, 2, 1)}
  %4: f32[2,8,8] = matmul(%0, %3)
  %5: f32[2,8,8] = softmax(%4) {axis=2}
  %6: f32[2,8,16] = matmul(%5, %2)
  return %6 as "out"
}"""


def _merge_rules():
    """Generated rules equating two matmuls with one matmul over concatenated weights, used in
    the merging direction (rules are equivalences; the larger side is stored on the left)."""
    out = []
    for r in SHIPPED:
        lo, ro = r.lhs.op_counts(), r.rhs.op_counts()
        if ro == {"matmul": 2} and lo.get("matmul") == 1 and "concat" in lo and "split" in lo:
            out.append(from_subst(r, reverse=True))
        elif lo == {"matmul": 2} and ro.get("matmul") == 1 and "concat" in ro and "split" in ro:
            out.append(from_subst(r))
    return out


def test_merge_two_matmuls_in_bert_layer() -> None:
    rules = _merge_rules()
    assert rules, "the shipped set has no matmul-merging rule"
    g = parse(BERT)
    fired = None
    for r in rules:
        ms = matches(g, r)
        if ms:
            fired = (r, ms)
            break
    assert fired is not None, "no merge rule matched the BERT layer"
    r, ms = fired
    ng = apply(g, r, ms[0])
    assert not isinstance(ng, MatchFail)
    verify(ng)
    assert _ops(ng)["matmul"] == _ops(g)["matmul"] - 1
    assert _ops(ng)["concat"] == 1 and _ops(ng)["split"] == 1
    _same(g, ng)


SCALAR = """graph scaled(%x: f32[4,6], %y: f32[4,6], %s: f32[]) {
  %0: f32[4,6] = mul(%x, %s)
  %1: f32[4,6] = mul(%y, %s)
  %2: f32[4,6] = add(%0, %1)
  %3: f32[4,6] = relu(%2)
  return %3 as "out"
}"""


def test_distribute_scalar_multiply() -> None:
    g = parse(SCALAR)
    rules = [from_subst(r) for r in SHIPPED if r.source in ("elementwise", "linalg")]
    cands = [r for r in rules if matches(g, r)]
    assert cands, "no generated rule matches a*s + b*s"
    shrunk = False
    for r in cands:
        for ng in rewrites(g, r):
            verify(ng)
            _same(g, ng)
            if _ops(ng).get("mul", 0) < _ops(g)["mul"]:
                shrunk = True
    assert shrunk, "no rule factored the scalar multiply out"


def test_rewrite_fixpoint_with_tracer() -> None:
    g = parse(SCALAR)
    rules = [from_subst(r) for r in SHIPPED if r.source == "elementwise" and r.lhs_ops > r.rhs_ops]
    tr = Tracer()
    ng, st = rewrite(g, rules, max_steps=20, tracer=tr)
    assert st.steps >= 1 and st.stopped in ("fixpoint", "max_steps")
    assert len(ng.nodes) < len(g.nodes)
    _same(g, ng)


def test_generated_rules_apply_on_symbolic_dims() -> None:
    g = parse("""graph sym(%x: f32[batch,6]) {
  %0: f32[6,batch] = transpose(%x) {perm=(1, 0)}
  %1: f32[batch,6] = transpose(%0) {perm=(1, 0)}
  %2: f32[batch,6] = relu(%1)
  return %2 as "out"
}""")
    rules = [from_subst(r) for r in SHIPPED if r.lhs_ops > r.rhs_ops]
    ng, st = rewrite(g, rules, max_steps=10)
    assert "transpose" not in _ops(ng)
    assert str(ng.output_types[0]) == "f32[batch,6]"
