"""``graphopt shard IN.onnx --tp N -o OUT_DIR``: a tensor-parallel plan for N ranks, written as
per-rank programs + weights + a launch script (run with ``OUT_DIR/launch.sh --inputs X.npz`` or
``torchrun --nproc-per-node N -m graphopt.launch OUT_DIR --inputs X.npz``)."""
from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    s = sub.add_parser("shard", help="tensor-parallel plan: per-rank programs for torchrun")
    s.add_argument("input", help="ONNX model")
    s.add_argument("--tp", type=int, required=True, metavar="N", help="number of ranks (>= 2)")
    s.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="folder for the ranks' programs, weights and launch.sh")
    s.add_argument("--target", default="cpu", help="device the plan is priced for (cpu, a100, "
                                                    "h100, h200, ...)")
    s.add_argument("--inputs", default=None, metavar="X.npz",
                   help="inputs for the check (default: random valid inputs)")
    s.add_argument("--report", default=None, metavar="R.json", help="write the report as JSON")
    s.add_argument("--run", action="store_true",
                   help="also run the written folder under torchrun (gloo on CPU) on the check "
                        "inputs and compare with the original model")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    s.set_defaults(func=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    from ..cli import _check_input_file
    from ..errors import GraphOptError
    from .report import format_report
    from .save import save_plan
    from .stage import shard

    _check_input_file(args.input)
    if args.inputs is not None:
        _check_input_file(args.inputs)
    if args.tp < 2:
        raise GraphOptError(f"--tp must be >= 2, got {args.tp}", where="tp")
    from ..progress import for_args

    progress = for_args(args, "graphopt shard")
    try:
        plan = shard(args.input, world_size=args.tp, target=args.target, inputs=args.inputs,
                     progress=progress.say)
        progress.say("writing and checking the folder")
        out = save_plan(plan, args.output, inputs=args.inputs)
    finally:
        progress.close()
    rep = plan.report
    if args.run:
        rep["torchrun"] = run_and_compare(plan, out, args.inputs)
    if args.report:
        from ..report import write_json_atomic

        write_json_atomic(rep, args.report)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    print(f"wrote {out} ({args.tp} ranks): run `{out}/launch.sh --inputs X.npz`")
    return 0


def run_and_compare(plan: Any, out: Any, inputs: Any) -> dict[str, Any]:
    """Run the folder under torchrun on the check inputs; compare every output with the
    original model's (ONNX Runtime) within the check's tolerances."""
    import numpy as np

    from ..check import coerce_inputs, compare_outputs, run_onnx
    from .run import run_distributed

    feeds = coerce_inputs(plan.original, inputs)
    res = run_distributed(out, plan.world_size, feeds, count_collectives=True)
    want = [np.asarray(w) for w in run_onnx(plan.source.model, feeds)]
    names = list(plan.original.output_names)
    got = [np.asarray(res.outputs[n]) for n in names]
    compare_outputs(want, got, names, reference="the original model (ONNX Runtime)"
                    ).raise_if_failed(f"the torchrun output of {out}")
    # the largest difference relative to the output's largest magnitude
    worst = max((float(np.max(np.abs(g.astype(np.float64) - w)) /
                       max(float(np.max(np.abs(w))), 1e-30))
                 for g, w in zip(got, want) if w.size and w.dtype.kind == "f"), default=0.0)
    return {"max_relative_error": worst, "relative_error_is": "max |torchrun - original| / "
            "max |original| over each output", "collectives": res.counts}
