"""The ONNX backend node tests through graphopt: for every case plain ONNX Runtime passes, check
it still passes after `graphopt.optimize` (load -> simplify -> fuse -> search) -> export -> ONNX
Runtime. The optimizer's own numeric check is off here: the suite compares with the cases'
expected outputs itself.

Script mode prints the failure table:
    python -m tests.frontends.test_onnx_backend_suite [-v] [name-filter]
"""
from __future__ import annotations

import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

PASS_RATE = 0.99
SEARCH_BUDGET = 1.0  # seconds of rewrite search per case (the graphs are tiny)


@dataclass
class SuiteResult:
    total: int = 0
    ort_ok: int = 0  # cases plain ONNX Runtime passes (the ones we count)
    passed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # case -> reason
    fail_ops: Counter = field(default_factory=Counter)
    opaque_ops: Counter = field(default_factory=Counter)  # op_type -> cases where it stayed opaque
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.passed / self.ort_ok if self.ort_ok else 1.0

    def table(self, verbose: bool = False) -> str:
        lines = [f"ONNX backend node tests: {self.total} cases, ONNX Runtime passes "
                 f"{self.ort_ok}, graphopt round trip passes {self.passed} "
                 f"({100 * self.rate:.2f}%) in {self.seconds:.1f}s"]
        if self.fail_ops:
            lines.append("failures by op:")
            for op, k in sorted(self.fail_ops.items(), key=lambda x: (-x[1], x[0])):
                lines.append(f"  {op:32s} {k}")
        if verbose:
            for case, why in sorted(self.failures.items()):
                lines.append(f"  {case}: {why}")
        if self.opaque_ops:
            lines.append("ops kept opaque (cases):")
            lines.append("  " + ", ".join(f"{op} {k}" for op, k in
                                          sorted(self.opaque_ops.items())))
        return "\n".join(lines)


def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _run_case(sess: Any, input_names: Sequence[str], data_sets: Sequence[Any], rtol: float,
              atol: float) -> None:
    from onnx.backend.test.runner import Runner

    for ins, outs in data_sets:
        feeds = dict(zip(input_names, ins))
        res = sess.run(None, feeds)
        Runner.assert_similar_outputs(outs, res, rtol, atol)


def _pipeline() -> Callable[[Any], Any]:
    """What `graphopt optimize` does, without its numeric check: optimize -> export."""
    import graphopt

    def go(model: Any) -> tuple[bytes, list[Any]]:
        om = graphopt.optimize(model, target="cpu", check=False, budget=SEARCH_BUDGET)
        return om.onnx_model().SerializeToString(), om.report.get("opaque") or []

    return go


def run_suite(name_filter: str = "", verbose: bool = False) -> SuiteResult:
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_node_model_tests()
    go = _pipeline()
    res = SuiteResult()
    t0 = time.time()
    for c in cases:
        if name_filter and name_filter not in c.name:
            continue
        res.total += 1
        model = c.model
        names = [i.name for i in model.graph.input]
        try:
            _run_case(_ort_session(model.SerializeToString()), names, c.data_sets, c.rtol, c.atol)
        except Exception:
            continue  # not counted: plain ONNX Runtime fails it too
        res.ort_ok += 1
        ops = sorted({n.op_type for n in model.graph.node})
        op = ops[0] if len(ops) == 1 else _main_op(c.name, ops)
        try:
            data, opaque = go(model)
            for note in opaque:
                res.opaque_ops[note["op_type"]] += 1
            _run_case(_ort_session(data), names, c.data_sets, c.rtol, c.atol)
            res.passed += 1
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            if verbose:
                msg += "\n" + "".join(traceback.format_exception(e)[-3:])
            res.failures[c.name] = msg[:2000]
            res.fail_ops[op] += 1
    res.seconds = time.time() - t0
    return res


def _main_op(case: str, ops: list[str]) -> str:
    low = case.lower().replace("_", "")
    for o in sorted(ops, key=len, reverse=True):
        if o.lower() in low:
            return o
    return "+".join(ops[:3])


def test_backend_node_suite() -> None:
    res = run_suite()
    print(res.table())
    assert res.ort_ok > 1000, res.table()
    assert res.rate >= PASS_RATE, res.table(verbose=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    r = run_suite(args[0] if args else "", verbose="-v" in sys.argv)
    print(r.table(verbose="-v" in sys.argv))
