"""The same input and options give byte-identical output files across processes
(docs/determinism.md).

``graphopt optimize`` runs in separate processes with different ``PYTHONHASHSEED`` values (and,
through address-space randomisation, different object ids) on: the shipped example, a small BERT
whose search applies rewrites and is stopped by its budget, and an int8 quantization of a small
Llama. The written files must be equal byte for byte, and so must what the reports say about the
search (graphs explored, why it stopped, rules applied). In process: a search stopped by a budget
in seconds stops at the same graph however slow the clock says the machine is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ("0", "1", "2")


def _optimize_in_processes(model: Path, out_dir: Path, args: list[str],
                           seeds: tuple[str, ...] = SEEDS) -> list[tuple[bytes, dict[str, Any]]]:
    """Run ``graphopt optimize model`` once per hash seed, two processes at a time; returns each
    run's output bytes and report."""
    runs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    results: list[tuple[bytes, dict[str, Any]]] = []

    def finish(p: subprocess.Popen[bytes], out: Path, rep: Path) -> None:
        stdout, _ = p.communicate(timeout=300)
        assert p.returncode == 0, stdout.decode(errors="replace")[-3000:]
        results.append((out.read_bytes(), json.loads(rep.read_text())))

    for seed in seeds:
        if len(runs) == 2:
            finish(*runs.pop(0))
        out, rep = out_dir / f"out{seed}.onnx", out_dir / f"report{seed}.json"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        p = subprocess.Popen([sys.executable, "-m", "graphopt", "optimize", str(model), "-o",
                              str(out), "--report", str(rep), *args],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        runs.append((p, out, rep))
    for r in runs:
        finish(*r)
    return results


def _search_facts(report: dict[str, Any]) -> dict[str, Any]:
    s = report.get("search") or {}
    return {k: s.get(k) for k in ("graphs_explored", "graphs_expanded", "stopped",
                                  "rules_applied", "cost_after_us")}


def _assert_identical(results: list[tuple[bytes, dict[str, Any]]]) -> None:
    first, rep0 = results[0]
    for i, (data, rep) in enumerate(results[1:], 1):
        assert data == first, f"run {i} wrote different bytes than run 0"
        assert _search_facts(rep) == _search_facts(rep0)
        assert rep["check"] == rep0["check"]


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.export_transformers import export

    path = tmp_path_factory.mktemp("det_bert") / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export("bert-base", str(path), seq=16, layers=2, hidden=64, heads=4)
    return path


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tests.models import build

    module, inputs, names = build("llama")
    path = tmp_path_factory.mktemp("det_llama") / "llama.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=list(names), dynamo=False,
                          opset_version=17)
    return path


def test_the_example_is_written_identically(tmp_path: Path) -> None:
    results = _optimize_in_processes(ROOT / "examples" / "tiny_gpt2.onnx", tmp_path, [],
                                     seeds=SEEDS[:2])
    _assert_identical(results)


def test_a_search_stopped_by_its_budget_is_written_identically(small_bert: Path,
                                                               tmp_path: Path) -> None:
    # h100 without the fusion passes: the search merges q/k/v and rewrites attention, and the
    # 3-second budget (300 graphs) stops it before it runs out of candidates
    results = _optimize_in_processes(small_bert, tmp_path, ["--target", "h100", "--passes",
                                                            "default", "--budget", "3"])
    _assert_identical(results)
    s = results[0][1]["search"]
    assert s["stopped"] == "explored" and s["graphs_explored"] == 300
    assert s["rules_applied"].get("merge_matmul_shared_lhs", 0) >= 2


def test_a_quantized_model_is_written_identically(small_llama: Path, tmp_path: Path) -> None:
    results = _optimize_in_processes(small_llama, tmp_path, ["--quantize", "int8"],
                                     seeds=SEEDS[:2])
    _assert_identical(results)
    assert results[0][1]["quantization"]


def test_a_budget_in_seconds_stops_at_the_same_graph_on_a_slow_clock() -> None:
    from bench.taso_models import TINY
    from graphopt.cost.model import CostModel
    from graphopt.passes.merge_parallel import RULES as MERGE_RULES
    from graphopt.search.budget import Budget
    from graphopt.search.windows import search

    g = TINY["nasrnn"]()
    model = CostModel("cpu")

    def run(tick: float) -> Any:
        t = [0.0]

        def clock() -> float:  # each reading advances the clock by ``tick`` seconds
            t[0] += tick
            return t[0]

        b = Budget.of_seconds(0.2, max_graphs=1000)
        b.clock = clock
        return search(g, MERGE_RULES, model, budget=b)

    fast, slow = run(0.0), run(1e-5)
    assert fast.stopped == slow.stopped == "explored"
    assert slow.explored == fast.explored and fast.applied == slow.applied
    assert fast.graph.fingerprint() == slow.graph.fingerprint()
    # a clock past the safety stop is what ends a search early, and it says so
    stuck = run(1.0)
    assert stuck.stopped == "time" and stuck.explored < fast.explored
