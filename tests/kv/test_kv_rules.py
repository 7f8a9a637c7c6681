"""The KV-cache identities as hand-written rules (passes/rules/kv_cache.rules): `graphopt rules
verify` proves them and `rules list --kind kv_cache` lists them; z3 refutes wrong masks and
wrong rows; and the masks the rules state are the ones the derivation puts in decode graphs."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from graphopt.cli import main
from graphopt.ir.graph import Graph
from graphopt.passes import RULES_DIR
from graphopt.subst.rulefile import SubstRule, load_file, loads
from graphopt.subst.verify import verify_rule
from graphopt.subst.verify_z3 import prove

RULES = {r.name: r for r in load_file(RULES_DIR / "kv_cache.rules")}
NAMES = ["kv.decode_step", "kv.decode_step_window", "kv.decode_step_padding_gqa",
         "kv.row_local_matmul", "kv.row_local_rotary"]


def canonical_keep(past: int, total: int, window: int | None = None) -> np.ndarray:
    """keep[i, j] of the new rows i (past + i is the position) over every key j."""
    i = np.arange(total - past)[:, None] + past
    j = np.arange(total)[None, :]
    keep = j <= i
    return keep & (j > i - window) if window is not None else keep


def _constants(g: Graph) -> list[np.ndarray]:
    return [n.attrs["data"].array for n in g.nodes if n.op == "constant"]


def test_the_rules_are_there_with_their_kind() -> None:
    assert sorted(RULES) == sorted(NAMES)
    for r in RULES.values():
        assert r.kind == "kv_cache" and not r.pass_name and r.get("doc")


@pytest.mark.parametrize("name", NAMES)
def test_rule_is_proven(name: str) -> None:
    v = verify_rule(RULES[name], timeout_ms=20000)
    assert v.ok and v.stage == "ok", f"{v.stage}: {v.reason}"
    assert v.method in ("normalize", "solver")  # a proof, not a float test


def test_cli_verifies_and_lists_the_kv_rules(capsys: Any) -> None:
    path = str(RULES_DIR / "kv_cache.rules")
    assert main(["rules", "verify", path]) == 0
    out = capsys.readouterr().out
    assert "5/5 rules verified (kv_cache 5/5" in out
    assert "5 rule(s) of kind kv_cache name no pass: proven, nothing to replay" in out
    assert main(["rules", "list", "--kind", "kv_cache"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "5 rules (kv_cache 5)" in out


def _mutant(name: str, old: str, new: str) -> SubstRule:
    text = RULES[name].text()
    assert text.count(old) >= 1, old
    (r,) = loads(text.replace(old, new), "kv_cache")
    return r


@pytest.mark.parametrize("name,old,new", [
    # the new rows over every key: a bidirectional mask
    ("kv.decode_step", "[true, true, true, false, true, true, true, true]",
     "[true, true, true, true, true, true, true, true]"),
    # the decode mask of the previous step (j <= P - 1 + i)
    ("kv.decode_step", "[true, true, true, false, true, true, true, true]",
     "[true, true, false, false, true, true, true, false]"),
    # a window one key too wide
    ("kv.decode_step_window", "[false, true, true, false, false, false, true, true]",
     "[true, true, true, false, false, true, true, true]"),
    # the first rows of a matmul are not the matmul of later rows
    ("kv.row_local_matmul", "%0: f32[1,2,3] = slice(%x) {axes=(1,), ends=(2,), starts=(0,)",
     "%0: f32[1,2,3] = slice(%x) {axes=(1,), ends=(3,), starts=(1,)"),
    # rotary rows with the cos / sin of other positions
    ("kv.row_local_rotary", "%1: f32[1,2,1] = slice(%cos) {axes=(1,), ends=(2,), starts=(0,)",
     "%1: f32[1,2,1] = slice(%cos) {axes=(1,), ends=(4,), starts=(2,)"),
])
def test_z3_refutes_wrong_variants(name: str, old: str, new: str) -> None:
    """The proof itself (not only the float pre-test) does not accept a wrong statement (z3
    finds a counterexample or, through softmax's exponentials, cannot decide)."""
    wrong = _mutant(name, old, new)
    pf = prove(wrong, {}, 2000)
    assert not pf.proved and pf.reason, wrong.text()
    assert not verify_rule(wrong).ok


def test_rule_masks_are_the_canonical_decode_masks() -> None:
    (keep,) = _constants(RULES["kv.decode_step"].rhs)
    assert np.array_equal(keep, canonical_keep(2, 4))
    (keep,) = _constants(RULES["kv.decode_step_padding_gqa"].rhs)
    assert np.array_equal(keep, canonical_keep(2, 4))
    (full,) = _constants(RULES["kv.decode_step_window"].lhs)
    (new,) = _constants(RULES["kv.decode_step_window"].rhs)
    assert np.array_equal(full, canonical_keep(0, 4, 2))
    assert np.array_equal(new, canonical_keep(2, 4, 2))


@pytest.mark.parametrize("variant,window", [("causal", None), ("window", 3)])
def test_derived_decode_mask_is_the_rules_mask(variant: str, window: int | None) -> None:
    """The mask the derivation builds in the decode graph, run at 2 new tokens after 3 past
    ones, is canonical_keep: the mask the rules state (at their sizes) and prove."""
    from graphopt.check import run_graph
    from graphopt.kv.derive import derive
    from graphopt.pipeline import lift, resolve_source
    from tests.kv import decoders

    module, inputs, _ = decoders.tiny(variant)
    d = derive(lift(resolve_source(module, inputs), dynamic=True), 32)
    (att,) = [n for n in d.decode.nodes if n.op == "attention"]
    assert len(att.inputs) == 4 and not att.attrs["causal"]
    sub = Graph(d.decode.inputs, [att.inputs[3]], ["keep"], name="mask", meta=d.decode.meta)
    past, new = 3, 2
    s = d.spec
    feeds = {"input_ids": np.zeros((1, new), np.int64),
             "attention_mask": np.ones((1, past + new), np.int64),
             "position_ids": np.arange(past, past + new)[None]}
    for i in range(s.num_layers):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = np.zeros(
                (1, s.num_kv_heads, past, s.head_size), np.float32)
    (keep,) = run_graph(sub, feeds, "numpy")
    assert np.array_equal(np.broadcast_to(keep, (1, 1, new, past + new))[0, 0],
                          canonical_keep(past, past + new, window))
