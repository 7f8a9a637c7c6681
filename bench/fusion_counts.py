"""Fusion counts on the model families the tests use, through the real ``optimize()`` steps.

    python -m bench.fusion_counts                       # table
    python -m bench.fusion_counts --save counts.json    # keep the numbers
    python -m bench.fusion_counts --compare counts.json # table + every count that went down

Each model of ``tests/models.py`` (random weights, tiny configs) is lifted three ways (torch.export,
the legacy TorchScript ONNX exporter, the dynamo ONNX exporter), simplified and fused as
``graphopt.optimize`` does for ``--target`` (search off: only the fusion step is counted), and
the fused ops of the result are counted. ``--compare`` exits 1 when any count is lower than the
saved one, so a refactor can show it lost no fusion.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import warnings
from typing import Any

FUSED_OPS = ("attention", "rms_norm", "layer_norm", "gelu", "rotary_embedding", "silu", "split",
             "opaque:MultiHeadAttention", "opaque:GroupQueryAttention",
             "opaque:SkipLayerNormalization", "opaque:SkipSimplifiedLayerNormalization")
MODELS = ("gpt2", "bert", "llama", "mistral", "t5", "vit")
FRONTENDS = ("torch", "onnx_legacy", "onnx_dynamo")


def _onnx(m: Any, ins: tuple, names: tuple, dynamo: bool) -> Any:
    import onnx
    import torch

    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(m, ins, dynamo=True, input_names=list(names),
                                     verbose=False)
            return prog.model_proto
        f = io.BytesIO()
        torch.onnx.export(m, ins, f, dynamo=False, input_names=list(names), opset_version=17)
        return onnx.load_from_string(f.getvalue())


def counts(name: str, frontend: str, target: str, contrib: bool) -> dict[str, int]:
    from graphopt.pipeline import resolve_source, run
    from tests.models import build

    m, ins, names = build(name)
    if frontend == "torch":
        src = resolve_source(m, ins)
    else:
        src = resolve_source(_onnx(m, ins, names, dynamo=frontend == "onnx_dynamo"))
    out = run(src, target=target, check=False, budget=0, allow_contrib_ops=contrib)
    ops = out.graph.op_counts()
    res = {k: ops.get(k, 0) for k in FUSED_OPS if ops.get(k, 0)}
    res["causal"] = sum(1 for n in out.graph.nodes
                        if n.op == "attention" and n.attrs["causal"])
    res["nodes"] = sum(ops.values())
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--contrib", action="store_true", help="allow com.microsoft contrib ops")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--frontends", nargs="*", default=list(FRONTENDS))
    ap.add_argument("--save")
    ap.add_argument("--compare")
    a = ap.parse_args(argv)
    table: dict[str, dict[str, int]] = {}
    for name in a.models:
        for fe in a.frontends:
            key = f"{name}/{fe}"
            table[key] = counts(name, fe, a.target, a.contrib)
            print(f"{key:24s} {table[key]}", flush=True)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
    if a.compare:
        with open(a.compare) as f:
            old = json.load(f)
        worse = []
        for key, row in old.items():
            new = table.get(key)
            if new is None:
                continue
            for op, n in row.items():
                if op == "nodes":
                    continue
                if new.get(op, 0) < n:
                    worse.append(f"{key}: {op} {n} -> {new.get(op, 0)}")
        print("\n".join(worse) if worse else "no fusion count went down")
        return 1 if worse else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
