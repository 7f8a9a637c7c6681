"""Verify one rule: float re-test at several sizes, then a z3 proof. Used by `rules generate`
(on candidates) and `rules verify` (on a shipped rule set); runs in worker processes."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..ir.types import TensorType
from .rulefile import SubstRule, loads
from .scenario import SCENARIOS
from .verify_numeric import check_numeric
from .verify_z3 import prove

DEFAULT_PROOF = {"a": 2, "b": 3, "c": 4, "d": 2, "e": 3, "f": 2}
DEFAULT_TEST = {"a": 3, "b": 2, "c": 3, "d": 4, "e": 2, "f": 3}


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    stage: str  # "numeric" | "z3" | "ok"
    method: str = ""  # how z3 proved it
    reason: str = ""
    numeric_s: float = 0.0
    z3_s: float = 0.0


def sizes_for(rule: SubstRule) -> tuple[list[dict[str, int]], dict[str, int]]:
    """(float test sizes, proof sizes) for the rule's dim variables."""
    vs = rule.dim_vars()
    sc = SCENARIOS.get(rule.source)
    proof_src = sc.proof_dims if sc and sc.proof_dims else DEFAULT_PROOF
    proof = {v: proof_src.get(v, DEFAULT_PROOF[v]) for v in vs}
    # float tests at the proof sizes and at other small sizes (the stored instance's primes
    # make conv tests slow without testing anything more)
    tests = [proof]
    extra = list(sc.test_dims) if sc and sc.test_dims else [DEFAULT_TEST]
    for t in extra:
        tests.append({v: t.get(v, DEFAULT_TEST[v]) for v in vs})
    return tests, proof


FLOAT_TRIALS = 16  # random trials of a float-only rule, in its own dtypes


def _float_tolerance(rule: SubstRule) -> tuple[float, float]:
    """rtol, atol for a float-only rule: loose enough for the rounding of its widest-ulp dtype."""
    dts = {t.dtype.value for t in rule.lhs.input_types if isinstance(t, TensorType)}
    if dts & {"f16", "bf16"}:
        return 2e-3, 2e-3
    if "f32" in dts:
        return 1e-5, 1e-6
    return 1e-7, 1e-9


def verify_rule(rule: SubstRule, seed: int = 0, timeout_ms: int = 5000,
                nlsat: bool = True) -> Verdict:
    """Float re-test, then proof (``verify_z3.prove``; ``nlsat``: with the nonlinear fallback,
    which verification uses and generation does not)."""
    tests, proof_env = sizes_for(rule)
    t0 = time.perf_counter()
    narrow = not rule.generated and any(
        isinstance(t, TensorType) and t.dtype.value in ("f16", "bf16")
        for t in rule.lhs.input_types)
    if rule.float_only:
        # holds by floating-point rounding, not over the reals: no proof exists, so it is
        # tested (more often) in its declared dtypes instead
        rtol, atol = _float_tolerance(rule)
        try:
            why = check_numeric(rule, tests[:1], seed=seed, trials=FLOAT_TRIALS, rtol=rtol,
                                atol=atol, keep_dtype=True)
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
        dt = time.perf_counter() - t0
        if why is not None:
            return Verdict(rule.name, False, "numeric", reason=why, numeric_s=dt)
        return Verdict(rule.name, True, "ok", "float-tested", numeric_s=dt)
    try:
        if narrow:  # f16 inputs: tested in f16, within f16's rounding (the proof is exact)
            rtol, atol = _float_tolerance(rule)
            why = check_numeric(rule, tests, seed=seed, rtol=rtol, atol=atol, keep_dtype=True)
        else:
            why = check_numeric(rule, tests, seed=seed)
    except Exception as e:  # an op failing on these inputs is a failed test, with its reason
        why = f"{type(e).__name__}: {e}"
    t1 = time.perf_counter()
    if why is not None:
        return Verdict(rule.name, False, "numeric", reason=why, numeric_s=t1 - t0)
    pf = prove(rule, proof_env, timeout_ms, nlsat)
    if not pf.proved:
        return Verdict(rule.name, False, "z3", reason=pf.reason, numeric_s=t1 - t0,
                       z3_s=pf.seconds)
    return Verdict(rule.name, True, "ok", pf.method, numeric_s=t1 - t0, z3_s=pf.seconds)


def verify_text(args: tuple) -> Verdict:
    """Worker entry: (rule text, source, seed, timeout_ms[, nlsat]) -> Verdict (picklable both
    ways). ``nlsat`` (default False: what ``rules generate`` keeps must not depend on it) adds
    the nonlinear fallback, as ``rules verify`` does."""
    text, source, seed, timeout_ms = args[:4]
    nlsat = bool(args[4]) if len(args) > 4 else False
    (rule,) = loads(text, source)
    rule = SubstRule(rule.name, rule.lhs, rule.rhs, source, rule.meta)
    return verify_rule(rule, seed, timeout_ms, nlsat)
