"""``graphopt codegen MODEL --target a100 [--dump DIR]``: optimize a model, partition it into
kernel regions and write one ``.py`` file per generated Triton kernel (registered into the
``graphopt`` command by ``graphopt.cli``)."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

TARGETS = ("a100", "h100", "h200")


def add_parser(sub: Any) -> None:
    c = sub.add_parser("codegen", help="generate the Triton kernels of a model (one .py file "
                       "per kernel with --dump)")
    c.add_argument("input", help=".onnx model or .ir text graph")
    c.add_argument("--target", choices=TARGETS, default="a100", help="GPU (default: a100)")
    c.add_argument("--dump", metavar="DIR", default=None, help="write the kernels into DIR")
    c.add_argument("--json", action="store_true", help="print the regions as JSON")
    c.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    c.set_defaults(func=cmd_codegen)


def cmd_codegen(args: argparse.Namespace) -> int:
    from graphopt.api import load, optimize
    from graphopt.errors import GraphOptError

    from .triton.lower import lower

    if not os.path.exists(args.input):
        raise GraphOptError("no such file", where=args.input)
    from graphopt.progress import for_args

    progress = for_args(args, "graphopt codegen")
    try:
        g = load(args.input)
        g = optimize(g, target=args.target, check=False, progress=progress).graph
        progress("lower", None)
        t0 = time.perf_counter()
        low = lower(g, args.target)
        progress("lower", time.perf_counter() - t0)
    finally:
        progress.close()
    files = {p.stem: str(p) for p in low.dump(args.dump)} if args.dump else {}
    rows = [{"kind": s.region.kind, "ops": s.region.ops, "kernel": s.kernel.name,
             "file": files.get(s.kernel.name)}
            for s in low.steps if s.region is not None and s.kernel is not None]
    kept = [{"op": n.op, "reason": low.kept.get(n.uid, "")}
            for n in (s.node for s in low.steps) if n is not None]
    if args.json:
        print(json.dumps({"summary": low.summary(), "kernels": rows, "torch_ops": kept},
                         indent=2))
        return 0
    for r in rows:
        print(f"{r['kernel']:<34} {r['kind']:<17} {' -> '.join(r['ops'])}")
    s = low.summary()
    print(f"{s['kernels']} kernels, {sum(s['torch_ops'].values())} torch ops "
          f"({', '.join(f'{k} x{v}' for k, v in s['torch_ops'].items()) or 'none'}); "
          f"estimated {s['est_fused_s'] * 1e6:.1f} us fused vs {s['est_unfused_s'] * 1e6:.1f} us "
          f"op by op on {args.target}")
    if args.dump:
        print(f"wrote {len(files)} kernel files to {args.dump}")
    return 0
