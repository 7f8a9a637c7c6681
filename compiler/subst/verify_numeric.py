"""Float re-test of a candidate rule at several shapes (the ops' own numpy semantics, float64)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.interp import run
from ..ir.types import Dim, TensorType
from .rulefile import SubstRule, instantiate_rule


def random_inputs(types: Sequence[TensorType], rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for t in types:
        assert t.shape is not None and t.is_static, f"cannot sample {t}"
        out.append(rng.standard_normal(tuple(t.shape)))  # type: ignore[arg-type]
    return out


def check_numeric(rule: SubstRule, envs: Sequence[Mapping[str, Dim]], seed: int = 0,
                  trials: int = 2, rtol: float = 1e-7, atol: float = 1e-9) -> str | None:
    """None when lhs and rhs agree on random float64 inputs at every size in ``envs``;
    otherwise the reason (which output, which sizes, how far apart)."""
    rng = np.random.default_rng(seed)
    for env in envs:
        try:
            lhs, rhs = instantiate_rule(rule, env)
        except GraphOptError as e:
            return f"cannot instantiate at {dict(env)}: {e.one_line()}"
        for _ in range(trials):
            xs = random_inputs(lhs.input_types, rng)  # type: ignore[arg-type]
            feed = dict(zip(lhs.input_names, xs))
            lo = run(lhs, **feed)
            ro = run(rhs, **{n: feed[n] for n in rhs.input_names})
            for i, (a, b) in enumerate(zip(lo, ro)):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.shape != b.shape:
                    return f"output {i}: shapes {a.shape} vs {b.shape} at {dict(env)}"
                if not np.allclose(a, b, rtol=rtol, atol=atol):
                    err = float(np.max(np.abs(a - b)))
                    return f"output {i} differs by {err:.3g} at sizes {dict(env)}"
    return None
