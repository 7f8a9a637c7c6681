"""Float re-test of a candidate rule at several shapes (the ops' own numpy semantics, float64)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.interp import NumpyInterpreter
from ..ir.types import Dim, TensorType
from .rulefile import SubstRule, instantiate_rule


def random_inputs(types: Sequence[TensorType], rng: np.random.Generator,
                  keep_dtype: bool = False) -> list[np.ndarray]:
    """Random values of each type: standard normal floats (float64 unless ``keep_dtype``),
    bools (about a third False, so masks mask), small non-negative ints (index-like)."""
    out = []
    for t in types:
        assert t.shape is not None and t.is_static, f"cannot sample {t}"
        shape = tuple(int(d) for d in t.shape)  # type: ignore[arg-type]
        if t.dtype.value == "bool":
            out.append(rng.random(shape) < 0.67)
        elif t.dtype.is_int:
            out.append(rng.integers(0, 4, shape).astype(t.dtype.to_numpy()))
        elif keep_dtype:
            out.append(rng.standard_normal(shape).astype(t.dtype.to_numpy()))
        else:
            out.append(rng.standard_normal(shape))
    return out


def check_numeric(rule: SubstRule, envs: Sequence[Mapping[str, Dim]], seed: int = 0,
                  trials: int = 2, rtol: float = 1e-7, atol: float = 1e-9,
                  keep_dtype: bool = False) -> str | None:
    """None when lhs and rhs agree on random inputs at every size in ``envs`` (float64 inputs,
    or the declared dtypes with ``keep_dtype``); otherwise the reason (which output, which
    sizes, how far apart). For a hand-written rule (used left to right only) a NaN on the lhs
    is an undefined original and matches anything; generated rules are equalities used both
    ways and must agree everywhere."""
    rng = np.random.default_rng(seed)
    for env in envs:
        try:
            lhs, rhs = instantiate_rule(rule, env)
        except GraphOptError as e:
            return f"cannot instantiate at {dict(env)}: {e.one_line()}"
        for _ in range(trials):
            xs = random_inputs(lhs.input_types, rng, keep_dtype)  # type: ignore[arg-type]
            feed = dict(zip(lhs.input_names, xs))
            lo = NumpyInterpreter().run(lhs, feed)
            ro = NumpyInterpreter().run(rhs, {n: feed[n] for n in rhs.input_names})
            for i, (a, b) in enumerate(zip(lo, ro)):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.shape != b.shape:
                    return f"output {i}: shapes {a.shape} vs {b.shape} at {dict(env)}"
                defined = ~np.isnan(a) if not rule.generated else np.ones(a.shape, bool)
                if not np.allclose(a[defined], b[defined], rtol=rtol, atol=atol):
                    err = float(np.max(np.abs(a[defined] - b[defined])))
                    return f"output {i} differs by {err:.3g} at sizes {dict(env)}"
    return None
