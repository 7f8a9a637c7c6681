"""CI slice of the CLI mutation fuzzer (``python -m tests.fuzz.cli_fuzz --n 2000`` is the full
run): 150 mutants, every kind on every seed, through ``cli.main`` forked per mutant, and a few
through ``python -m graphopt`` itself; every run must end cleanly (see ``cli_fuzz``)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from .cli_fuzz import Mutant, Runner, plan, run_mutants, table
from .mutations import KINDS, mutate
from .seeds import SEEDS, write_seed

SLICE = 150


def test_seeds_optimize(tmp_path: "os.PathLike[str]") -> None:
    """Unmutated, every seed optimizes and checks (exit 0, a valid output)."""
    from graphopt.cli import main

    for name in SEEDS:
        src = write_seed(name, os.path.join(tmp_path, name))
        assert main(["optimize", src, "-o", os.path.join(tmp_path, name, "o.onnx"),
                     "--budget", "0.2"]) == 0


def test_mutations_change_the_file(tmp_path: "os.PathLike[str]") -> None:
    """Each kind changes the seed's bytes (or its external data), deterministically."""
    seed = os.path.join(tmp_path, "seed")
    write_seed("external", seed)
    for kind in KINDS:
        a, b = os.path.join(tmp_path, kind + "a"), os.path.join(tmp_path, kind + "b")
        da = mutate(kind, seed, a, np.random.default_rng(3))
        db = mutate(kind, seed, b, np.random.default_rng(3))
        assert da == db

        def content(d: str) -> list[bytes]:
            return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]

        assert content(a) == content(b)
        assert content(a) != content(seed), kind


def test_plan_covers_every_kind_and_seed() -> None:
    ms = plan(len(KINDS) * len(SEEDS))
    assert {(m.seed, m.kind) for m in ms} == {(s, k) for s in SEEDS for k in KINDS}
    assert plan(20, seed=1) == plan(20, seed=1)


def test_fuzz_slice() -> None:
    outs = run_mutants(plan(SLICE, seed=15), Runner("fork", jobs=1))
    report = table(outs)
    print(report)
    assert len(outs) == SLICE
    assert not [o for o in outs if o.problems], report
    assert {o.code for o in outs} <= {0, 1, 2, 3}, report
    assert not [o for o in outs if o.code == 3], report  # a corrupt file is bad input


@pytest.mark.parametrize("label", ["mlp/truncate/0", "external/external_data/1",
                                   "loop/bogus_attribute/2"])
def test_real_cli(label: str) -> None:
    """``python -m graphopt`` in a subprocess ends the same way as the forked ``main``."""
    seed, kind, rs = label.split("/")
    ms = [Mutant(seed, kind, int(rs))]
    sub = run_mutants(ms, Runner("subprocess"))[0]
    fork = run_mutants(ms, Runner("fork"))[0]
    assert not sub.problems and not fork.problems, (sub.problems, fork.problems)
    assert sub.code == fork.code
    assert sub.error_line.split(": ", 2)[:2] == fork.error_line.split(": ", 2)[:2]
