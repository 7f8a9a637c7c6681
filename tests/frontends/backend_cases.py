"""The ONNX backend test cases of the installed ``onnx`` wheel (node, simple, pytorch-converted,
pytorch-operator and light suites) and how many graphopt optimizes and checks WITHOUT being
given inputs (the check generates them, ``graphopt.inputs``).

``run_without_inputs(case)`` is the per-case measurement: ``graphopt.optimize(model,
target="cpu", budget=1.0)`` with the check on and no inputs. Its status is

* ``ok``: optimized and checked;
* ``needs_inputs``: stopped with the one-line ``InputsNeeded`` error (which input, how to pass
  ``--inputs`` / ``inputs=``);
* ``failed``: anything else (the reason is the error's first line).

Script mode prints the table (cases ONNX Runtime fails with their own inputs are skipped):
    python -m tests.frontends.backend_cases [-v] [--kind node,simple,...] [name-filter]
With ``--seeds=N`` it only runs each original in ONNX Runtime on the inputs generated for
seeds 0..N-1 (the check uses seed 0) and lists the cases where some seed's values are refused.
"""
from __future__ import annotations

import glob
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator", "light")
SEARCH_BUDGET = 1.0  # seconds of rewrite search per case (the graphs are tiny)
OK, NEEDS_INPUTS, FAILED = "ok", "needs_inputs", "failed"


@dataclass
class Case:
    """One backend case: its model and its data sets (inputs, expected outputs)."""

    name: str
    kind: str
    model: Any  # onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float = 1e-3
    atol: float = 1e-7


def _data_dir() -> str:
    import onnx.backend.test.loader as loader

    return str(loader.DATA_DIR)


def _read_value(path: str) -> Any:
    """A tensor (numpy array) or a sequence (list of arrays) stored as a protobuf file."""
    import onnx
    from onnx import numpy_helper

    data = open(path, "rb").read()
    t = onnx.TensorProto()
    t.ParseFromString(data)
    if t.dims or t.raw_data or t.data_type:
        return numpy_helper.to_array(t)
    s = onnx.SequenceProto()
    s.ParseFromString(data)
    return numpy_helper.to_list(s)


def _dir_data_sets(case_dir: str) -> list[tuple[list[Any], list[Any]]]:
    out = []
    for ds in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
        ins = [_read_value(p) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")),
                                               key=_pb_index)]
        outs = [_read_value(p) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")),
                                                key=_pb_index)]
        out.append((ins, outs))
    return out


def _pb_index(path: str) -> int:
    return int(os.path.basename(path).split("_")[-1].split(".")[0])


def load_cases(kinds: Sequence[str] = KINDS, name_filter: str = "") -> list[Case]:
    """The backend cases of the given kinds whose name contains ``name_filter``."""
    import onnx
    from onnx.backend.test.loader import load_model_tests, load_node_model_tests

    cases: list[Case] = []
    for kind in kinds:
        if kind == "node":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for c in load_node_model_tests():
                    if name_filter in c.name:
                        cases.append(Case(c.name, kind, c.model, list(c.data_sets), c.rtol,
                                          c.atol))
        elif kind == "light":
            for path in sorted(glob.glob(os.path.join(_data_dir(), "light", "*.onnx"))):
                name = os.path.basename(path)[:-len(".onnx")]
                if name_filter not in name:
                    continue
                outs = [_read_value(p) for p in sorted(glob.glob(path[:-5] + "_output_*.pb"),
                                                        key=_pb_index)]
                cases.append(Case(name, kind, onnx.load(path), [([], outs)]))
        else:
            for c in load_model_tests(kind=kind):
                if name_filter not in c.name or c.model_dir is None:
                    continue
                model = onnx.load(os.path.join(c.model_dir, "model.onnx"))
                cases.append(Case(c.name, kind, model, _dir_data_sets(c.model_dir), c.rtol,
                                  c.atol))
    return cases


def _feed_names(model: Any) -> list[str]:
    """The graph inputs that are not initializers (IR < 4 lists initializers as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def ort_passes(case: Case) -> bool:
    """Does plain ONNX Runtime pass the case with its own inputs?"""
    import onnxruntime as ort
    from onnx.backend.test.runner import Runner

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(case.model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        for ins, outs in case.data_sets:
            feeds = dict(zip(_feed_names(case.model), ins))
            Runner.assert_similar_outputs(outs, sess.run(None, feeds), case.rtol, case.atol)
    except Exception:
        return False
    return True


class HasModel(Protocol):
    model: Any  # onnx.ModelProto


def run_without_inputs(case: HasModel) -> tuple[str, str]:
    """Optimize ``case.model`` (a ``Case`` here, or onnx's own backend ``TestCase``) with the
    numeric check on and no inputs given: (status, reason), status one of ``ok`` /
    ``needs_inputs`` / ``failed`` (module docstring); the reason is empty for ``ok``."""
    import graphopt
    from graphopt.inputs import InputsNeeded

    try:
        graphopt.optimize(case.model, target="cpu", budget=SEARCH_BUDGET)
    except InputsNeeded as e:
        return NEEDS_INPUTS, e.one_line()
    except Exception as e:  # measured: every other failure is counted with its reason
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return FAILED, f"{type(e).__name__}: {text}"[:400]
    return OK, ""


def ort_rejects_generated(case: HasModel, seeds: Sequence[int]) -> str:
    """Run the original model in ONNX Runtime on the inputs generated for each seed (no
    optimizing): '' when every seed's inputs run, else the first failure's one line."""
    from graphopt.check import run_onnx
    from graphopt.frontends.onnx import load
    from graphopt.inputs import InputsNeeded, make_inputs

    g = load(case.model)
    for seed in seeds:
        try:
            run_onnx(case.model, make_inputs(g, seed))
        except InputsNeeded as e:
            return f"seed {seed}: {e.one_line()}"[:300]
        except Exception as e:  # measured: ONNX Runtime's refusal of the generated values
            return f"seed {seed}: " + " ".join(str(e).split())[:300]
    return ""


def measure_seeds(seeds: Sequence[int], kinds: Sequence[str] = KINDS, name_filter: str = ""
                  ) -> tuple[int, dict[str, str]]:
    """Over the cases ONNX Runtime passes: how many run on the generated inputs of every seed,
    and the failures by case."""
    ok, bad = 0, {}
    for c in load_cases(kinds, name_filter):
        if not ort_passes(c):
            continue
        why = ort_rejects_generated(c, seeds)
        if why:
            bad[f"{c.kind}/{c.name}"] = why
        else:
            ok += 1
    return ok, bad


@dataclass
class Tally:
    """Counts of ``run_without_inputs`` over the cases ONNX Runtime passes."""

    total: int = 0
    ort_ok: int = 0
    status: Counter = field(default_factory=Counter)
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict)  # case -> (status, why)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.status[OK] / self.ort_ok if self.ort_ok else 1.0

    def table(self, verbose: bool = False) -> str:
        lines = [f"without inputs: {self.total} cases, ONNX Runtime passes {self.ort_ok}: "
                 f"optimized and checked {self.status[OK]} ({100 * self.rate:.2f}%), "
                 f"one-line --inputs error {self.status[NEEDS_INPUTS]}, other failures "
                 f"{self.status[FAILED]} ({self.seconds:.0f}s)"]
        for st in (FAILED, NEEDS_INPUTS) if verbose else (FAILED,):
            for case, (s, why) in sorted(self.reasons.items()):
                if s == st:
                    lines.append(f"  [{s}] {case}: {why}")
        return "\n".join(lines)


def measure(kinds: Sequence[str] = KINDS, name_filter: str = "", progress: bool = True
            ) -> Tally:
    """``run_without_inputs`` over every case ONNX Runtime passes."""
    from tqdm import tqdm

    tally = Tally()
    t0 = time.time()
    cases = load_cases(kinds, name_filter)
    for c in tqdm(cases, disable=not progress, mininterval=5):
        tally.total += 1
        if not ort_passes(c):
            continue
        tally.ort_ok += 1
        st, why = run_without_inputs(c)
        tally.status[st] += 1
        if st != OK:
            tally.reasons[f"{c.kind}/{c.name}"] = (st, why)
    tally.seconds = time.time() - t0
    return tally


def main(argv: Sequence[str]) -> None:
    kinds: Sequence[str] = KINDS
    seeds = 0
    args = [a for a in argv if not a.startswith("-")]
    for a in argv:
        if a.startswith("--kind="):
            kinds = a.split("=", 1)[1].split(",")
        if a.startswith("--seeds="):
            seeds = int(a.split("=", 1)[1])
    if seeds:  # only whether the original runs on the generated inputs of seeds 0..N-1
        ok, bad = measure_seeds(range(seeds), kinds, args[0] if args else "")
        print(f"generated inputs of seeds 0..{seeds - 1}: ONNX Runtime runs the original on all "
              f"of them in {ok} of {ok + len(bad)} cases it passes")
        for case, why in sorted(bad.items()):
            print(f"  {case}: {why}")
        return
    t = measure(kinds, args[0] if args else "")
    print(t.table(verbose="-v" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
