"""Derivability pruning (``graphopt.subst.derive``): composed rules go, others stay, the result
does not depend on the order, and the shipped set is what its manifest says."""
from __future__ import annotations

import json
import random
from pathlib import Path

from graphopt.subst.cli import main
from graphopt.subst.derive import Base, derivable, prune
from graphopt.subst.rulefile import RULES_DIR, SubstRule, load_dir, loads, read_manifest


def _rule(name: str, lhs: list[str], lhs_out: str, rhs: list[str], rhs_out: str,
          inputs: str = "%x: f32[5,7]", rhs_inputs: str | None = None) -> str:
    body = "\n".join(f"  {ln}" for ln in lhs)
    rbody = "\n".join(f"  {ln}" for ln in rhs)
    return (f"rule {name}\nlhs:\ngraph lhs({inputs}) {{\n{body}\n"
            f"  return {lhs_out} as \"o0\"\n}}\nrhs:\ngraph rhs({rhs_inputs or inputs}) {{\n"
            f"{rbody}\n  return {rhs_out} as \"o0\"\n}}\nend\n")


RELU2 = _rule("t-relu2", ["%0: f32[5,7] = relu(%x)", "%1: f32[5,7] = relu(%0)"], "%1",
              ["%0: f32[5,7] = relu(%x)"], "%0")
TT = _rule("t-tt", ["%0: f32[7,5] = transpose(%x) {perm=(1, 0)}",
                    "%1: f32[5,7] = transpose(%0) {perm=(1, 0)}"], "%1", [], "%x")
# relu(relu(transpose(transpose(x)))) = relu(x): t-tt, then t-relu2 (two steps)
COMPOSED = _rule("t-composed", ["%0: f32[7,5] = transpose(%x) {perm=(1, 0)}",
                                "%1: f32[5,7] = transpose(%0) {perm=(1, 0)}",
                                "%2: f32[5,7] = relu(%1)", "%3: f32[5,7] = relu(%2)"], "%3",
                 ["%0: f32[5,7] = relu(%x)"], "%0")
# relu commutes with transpose: no rule above says so
RELU_T = _rule("t-relu-t", ["%0: f32[7,5] = transpose(%x) {perm=(1, 0)}",
                            "%1: f32[7,5] = relu(%0)"], "%1",
               ["%0: f32[5,7] = relu(%x)", "%1: f32[7,5] = transpose(%0) {perm=(1, 0)}"], "%1")
# transpose(relu(relu(x))) = relu(transpose(x)): t-relu2 forward, then t-relu-t backward
RELU_T2 = _rule("t-relu-t2", ["%0: f32[5,7] = relu(%x)", "%1: f32[5,7] = relu(%0)",
                              "%2: f32[7,5] = transpose(%1) {perm=(1, 0)}"], "%2",
                ["%0: f32[7,5] = transpose(%x) {perm=(1, 0)}", "%1: f32[7,5] = relu(%0)"], "%1")

# x + (y - y) = x, and with it relu(relu(transpose(transpose(x)))) + (y - y) = relu(x), both
# used forward only (the rhs reads fewer inputs)
XY = "%x: f32[5,7], %y: f32[5,7]"
ZERO = _rule("t-zero", ["%0: f32[5,7] = sub(%y, %y)", "%1: f32[5,7] = add(%x, %0)"], "%1",
             [], "%x", XY, "%x: f32[5,7]")
ONE_WAY = _rule("t-one-way", ["%0: f32[7,5] = transpose(%x) {perm=(1, 0)}",
                              "%1: f32[5,7] = transpose(%0) {perm=(1, 0)}",
                              "%2: f32[5,7] = relu(%1)", "%3: f32[5,7] = relu(%2)",
                              "%4: f32[5,7] = sub(%y, %y)", "%5: f32[5,7] = add(%3, %4)"], "%5",
                ["%0: f32[5,7] = relu(%x)"], "%0", XY, "%x: f32[5,7]")

# exp-reduce-transpose: T(sum0(exp x)) = sum1(exp(T x)) follows from sum0(y) = T'(sum1(T y)),
# T(T'(sum1(T y))) = sum1(T y) and exp(T x) = T(exp x), through a graph of five ops (more than
# either side)
X3 = "%x: f32[5,7,11]"
T = "{perm=(2, 0, 1)}"
SUM_T = _rule("t-sum-t", [f"%0: f32[11,5,7] = transpose(%x) {T}",
                          "%1: f32[11,1,7] = reduce_sum(%0) {axes=(1,), keepdims=true}",
                          "%2: f32[1,7,11] = transpose(%1) {perm=(1, 2, 0)}"], "%2",
              ["%0: f32[1,7,11] = reduce_sum(%x) {axes=(0,), keepdims=true}"], "%0", X3)
# T(T'(sum1(T y))) = sum1(T y), used both ways
T_T = _rule("t-t-t", ["%0: f32[11,5,7] = transpose(%x) {perm=(2, 0, 1)}",
                      "%1: f32[11,1,7] = reduce_sum(%0) {axes=(1,), keepdims=true}",
                      "%2: f32[1,7,11] = transpose(%1) {perm=(1, 2, 0)}",
                      f"%3: f32[11,1,7] = transpose(%2) {T}"], "%3",
            ["%0: f32[11,5,7] = transpose(%x) {perm=(2, 0, 1)}",
             "%1: f32[11,1,7] = reduce_sum(%0) {axes=(1,), keepdims=true}"], "%1", X3)
EXP_T = _rule("t-exp-t", ["%0: f32[5,7,11] = exp(%x)", f"%1: f32[11,5,7] = transpose(%0) {T}"],
              "%1", [f"%0: f32[11,5,7] = transpose(%x) {T}", "%1: f32[11,5,7] = exp(%0)"], "%1",
              X3)
EXP_SUM_T = _rule("t-exp-sum-t", ["%0: f32[5,7,11] = exp(%x)",
                                  "%1: f32[1,7,11] = reduce_sum(%0) {axes=(0,), keepdims=true}",
                                  f"%2: f32[11,1,7] = transpose(%1) {T}"], "%2",
                  [f"%0: f32[11,5,7] = transpose(%x) {T}", "%1: f32[11,5,7] = exp(%0)",
                   "%2: f32[11,1,7] = reduce_sum(%1) {axes=(1,), keepdims=true}"], "%2", X3)


def _rules(*texts: str) -> list[SubstRule]:
    return [r for t in texts for r in loads(t, "t")]


def test_composition_of_two_kept_rules_is_dropped() -> None:
    # t-relu-t2 is t-relu2 forward, then t-relu-t backward
    kept, rep = prune(_rules(RELU_T2, RELU_T, RELU2))
    assert [r.name for r in kept] == ["t-relu2", "t-relu-t"]  # smallest first; composed goes
    assert rep.dropped == 1 and rep.derived == {"t-relu-t2": 1}  # the sides meet halfway
    assert rep.by_file == {"t": (3, 2)}


def test_not_derivable_rule_is_kept() -> None:
    base = Base()
    for r in _rules(RELU2, TT):
        base.add(r)
    (relu_t,) = _rules(RELU_T)
    assert not derivable(relu_t, base).derivable
    kept, _ = prune(_rules(RELU2, TT, RELU_T))
    assert [r.name for r in kept] == ["t-tt", "t-relu2", "t-relu-t"]


def test_only_the_searchs_directions_derive() -> None:
    """t-composed's lhs rewrites to its rhs (t-tt, then t-relu2), but the search also uses
    t-composed backward, and t-tt (whose rhs is a bare input) only forward: kept."""
    base = Base()
    for r in _rules(RELU2, TT):
        base.add(r)
    (composed,) = _rules(COMPOSED)
    assert not derivable(composed, base).derivable
    # used one way only (its rhs reads fewer inputs): derivable
    base.add(_rules(ZERO)[0])
    (ow,) = _rules(ONE_WAY)
    assert derivable(ow, base).derivable


def test_depth_bounds_the_search() -> None:
    # one rewrite from each side is needed: depth 0 finds nothing (the sides differ)
    kept, rep = prune(_rules(RELU_T2, RELU_T, RELU2), depth=0)
    assert len(kept) == 3 and rep.dropped == 0


def test_growth_bounds_the_graphs_passed_through() -> None:
    base = Base()
    for r in _rules(T_T, EXP_T, SUM_T):
        base.add(r)
    (rule,) = _rules(EXP_SUM_T)
    assert not derivable(rule, base).derivable  # default: no graph larger than either side
    c = derivable(rule, base, max_growth=None)
    assert c.derivable and c.paths == (("t-sum-t~", "t-t-t"), ("t-exp-t~",))
    assert not derivable(rule, base, max_growth=1).derivable
    assert derivable(rule, base, max_growth=2).derivable


def test_keep_pins_a_derivable_rule() -> None:
    kept, rep = prune(_rules(RELU_T2, RELU_T, RELU2), keep=["t-relu-t2~"])
    assert len(kept) == 3 and rep.kept_used == 1 and rep.pinned == ["t-relu-t2"]


def test_order_does_not_matter() -> None:
    # the shipped linalg rules (pruned through graphs no larger than their sides) lose a few
    # more when derivations may pass through larger graphs
    rules = load_dir(RULES_DIR / "linalg.rules")
    a, _ = prune(rules, max_growth=None)
    shuffled = list(rules)
    random.Random(3).shuffle(shuffled)
    b, _ = prune(shuffled, max_growth=None)
    assert [r.name for r in a] == [r.name for r in b]
    assert 0 < len(a) < len(rules)


def test_cli_prune_writes_files_and_manifest(tmp_path: Path, capsys) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "t.rules").write_text("\n".join([RELU_T2, RELU_T, RELU2]))
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    assert main(["rules", "prune", str(d), "--out", str(out), "--json", str(report)]) == 0
    assert "pruned 1 derivable rules" in capsys.readouterr().out
    assert [r.name for r in load_dir(out)] == ["t-relu-t", "t-relu2"]
    m = read_manifest(out)
    assert m["before"] == 3 and m["kept"] == 2 and m["by_file"] == {"t": {"before": 3, "after": 2}}
    assert json.loads(report.read_text())["dropped"] == 1
    used = tmp_path / "used.json"
    used.write_text(json.dumps({"used": ["t-relu-t2"]}))
    assert main(["rules", "prune", str(d), "--out", str(out), "--keep-used", str(used)]) == 0
    assert len(load_dir(out)) == 3

