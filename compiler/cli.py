"""The ``graphopt`` command.

    graphopt optimize IN.onnx -o OUT.onnx [--target T] [--report R.json] [--inputs X.npz]
                      [--quantize MODE [--group-size G] [--method M] [--calibration X.npz]
                       [--max-error DB]]
    graphopt inspect IN.onnx [--json]
    graphopt check A.onnx B.onnx [--inputs X.npz]
    graphopt optimize DECODER.onnx -o OUT_DIR --kv-cache [--max-length N] [--cache dynamic|window]
    graphopt generate OUT_DIR --prompt-ids 1,2,3 --max-new-tokens 64   (graphopt.kv.cli)
    graphopt shard IN.onnx --tp N -o OUT_DIR [--target T] [--inputs X.npz] [--run]
                                              (tensor parallelism; graphopt.tp.cli)
    graphopt rules ...                       (the substitution library; graphopt.subst.cli)
    graphopt codegen MODEL [--target a100] [--dump DIR]   (Triton kernels; graphopt.codegen.cli)

Exit codes: 0 ok, 1 check mismatch, 2 bad usage or bad input, 3 internal error. Errors are one
line naming the file and node; ``--verbose`` adds the traceback.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Sequence

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


# ---- target --------------------------------------------------------------------------------------

def detect_target() -> str:
    """The target for the GPU of this machine (cpu without one or for an unknown GPU)."""
    names: list[str] = []
    for info in glob.glob("/proc/driver/nvidia/gpus/*/information"):
        try:
            with open(info) as f:
                names += [ln.split(":", 1)[1] for ln in f if ln.startswith("Model:")]
        except OSError:
            continue
    if not names and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            names = out.stdout.splitlines() if out.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            names = []
    for n in names:
        for t in ("h200", "h100", "a100"):
            if t in n.lower():
                return t
    return "cpu"


# ---- commands ------------------------------------------------------------------------------------

def cmd_optimize(args: argparse.Namespace) -> int:
    from .api import optimize
    from .frontends.hf_folder import is_model_folder
    from .progress import for_args
    from .report import comparison_table, format_report, human_bytes, write_json_atomic

    target = args.target or detect_target()
    folder = is_model_folder(args.input)
    if not folder:
        _check_input_file(args.input)
        if args.task or args.batch or args.seq or args.static:
            raise _Usage("--task / --batch / --seq / --static apply to a transformers model "
                         "folder (a directory with config.json)", where=args.input)
    elif args.bench:
        raise _Usage("--bench times ONNX files; a model folder has none (bench the written "
                     "model with graphopt bench)", where=args.input)
    kv = _kv_args(args)
    folder_args = {"task": args.task, "batch": args.batch, "seq": args.seq,
                   "static": args.static} if folder else {}
    if not kv and (args.output.endswith(("/", os.sep)) or os.path.isdir(args.output)):
        raise _Usage("-o names a folder; optimize writes one .onnx file (give its path, e.g. "
                     "DIR/model.onnx; a folder is written with --kv-cache)", where=args.output)
    _check_output_dir(args.output.rstrip("/\\") or args.output)
    if args.html:
        _check_output_dir(args.html)
    progress = for_args(args)
    written = os.path.join(args.output, "model.onnx") if kv else args.output
    rows = None
    try:
        om = optimize(args.input, target=target, passes=args.passes, check=not args.no_check,
                      inputs=args.inputs, progress=progress, budget=args.budget,
                      cost=args.cost, allow_contrib_ops=args.allow_contrib_ops,
                      fold_initializer_inputs=args.fold_initializer_inputs, search=args.search,
                      **_quant_args(args), **kv, **folder_args)
        progress("write", None)
        t0 = time.perf_counter()
        om.save(args.output)
        progress("write", time.perf_counter() - t0)
        if args.bench:
            from .bench_cmd import bench_models

            progress("bench", None)
            t0 = time.perf_counter()
            rows = bench_models([args.input, written], args.inputs, runs=args.bench)
            progress("bench", time.perf_counter() - t0)
        if args.html:
            from .html_report import write_html

            progress("html", None)
            t0 = time.perf_counter()
            latency = {label: {"median_ms": r.median_ms, "q1_ms": r.q1_ms, "q3_ms": r.q3_ms}
                       for label, r in zip(("original", "optimized"), rows)} if rows else None
            write_html(om.report, om.original, om.graph, args.html, latency=latency)
            progress("html", time.perf_counter() - t0)
    finally:
        progress.close()  # a failed step must not leave the live line ticking over the error
    if folder:  # the model as exported from the folder (before graphopt's rewrites)
        from .frontends.onnx_export import to_model

        before = _op_counts(to_model(om.original, check=False))
        size_in = sum(os.path.getsize(os.path.join(args.input, f))
                      for f in os.listdir(args.input)
                      if os.path.isfile(os.path.join(args.input, f)))
    else:
        before, size_in = _onnx_op_counts(args.input), _file_size(args.input)
    after = _onnx_op_counts(written)
    extra = [("size", human_bytes(size_in), human_bytes(_file_size(written)))]
    print(comparison_table(before, after, extra, title="op (ONNX)"))
    if args.verbose:
        print(format_report(om.report))
    else:
        if om.report.get("search"):
            from .search.stage import format_search

            print(format_search(om.report["search"]))
        chk = om.report.get("check")
        if chk:
            print(f"check: {'ok' if chk['ok'] else 'MISMATCH'} (max abs {chk['max_abs']}, "
                  f"max rel {chk['max_rel']})")
    if om.report.get("quantization"):
        from .quant.report import format_quantization

        print(format_quantization(om.report["quantization"], verbose=args.verbose))
    if om.report.get("kv_cache"):
        from .kv.report import format_kv

        print(format_kv(om.report["kv_cache"], verbose=args.verbose))
    if rows:
        from .bench_cmd import format_table

        print(format_table(rows))
    if args.report:
        write_json_atomic(om.report, args.report)
    print(f"wrote {args.output} (target {om.target})")
    if args.html:
        print(f"wrote {args.html}")
    return EXIT_OK


def _kv_args(args: argparse.Namespace) -> dict[str, Any]:
    """optimize()'s KV-cache arguments (none without --kv-cache)."""
    if not args.kv_cache:
        if args.max_length is not None or args.cache is not None:
            raise _Usage("--max-length / --cache need --kv-cache", where="kv_cache")
        return {}
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise _Usage("with --kv-cache the output is a folder, and a file of that name exists",
                     where=args.output)
    return {"kv_cache": True, "max_length": args.max_length, "cache": args.cache}


def _quant_args(args: argparse.Namespace) -> dict[str, Any]:
    """optimize()'s quantization arguments from the command line (none without --quantize;
    the quantization options without it are a usage error)."""
    opts = {"calibration": args.calibration, "group_size": args.group_size,
            "method": args.method, "max_error": args.max_error,
            "activations": args.activations}
    if args.quantize is None:
        given = [k for k, v in opts.items() if v is not None]
        if given or args.quantize_lm_head or args.no_quantize_embeddings or \
                args.no_mixed_precision:
            raise _Usage("--calibration / --group-size / --method / --max-error / "
                         "--activations need --quantize MODE", where="quantize")
        return {}
    if args.calibration is not None:
        _check_input_file(args.calibration)
    return {"quantize": args.quantize, **opts,
            "quantize_lm_head": True if args.quantize_lm_head else None,
            "quantize_embeddings": False if args.no_quantize_embeddings else None,
            "mixed_precision": False if args.no_mixed_precision else None}


def cmd_inspect(args: argparse.Namespace) -> int:
    from .frontends.onnx_io import read_model

    _check_input_file(args.input)
    m = read_model(args.input)
    info = inspect_model(m, args.input)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    from .report import human_bytes

    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in info["opsets"].items())
    print(f"{args.input}: ir_version {info['ir_version']}, opsets {opsets}, "
          f"producer {info['producer'] or '-'}")
    print("inputs:")
    for i in info["inputs"]:
        print(f"  {i['name']}: {i['type']}")
    print("outputs:")
    for o in info["outputs"]:
        print(f"  {o['name']}: {o['type']}")
    p = info["parameters"]
    print(f"parameters: {p['count']} in {p['tensors']} tensors ({human_bytes(p['bytes'])}"
          f"{', external data' if p['external'] else ''})")
    print(f"ops ({info['nodes']} nodes):")
    width = max((len(k) for k in info["ops"]), default=0)
    for k, v in info["ops"].items():
        print(f"  {k:<{width}}  {v}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_onnx
    from .frontends.onnx import load

    for p in (args.a, args.b):
        _check_input_file(p)
    ga = load(args.a)
    res = check_onnx(args.a, args.b, args.inputs, graph_for_inputs=ga, seed=args.seed,
                     raise_on_mismatch=False)
    print(f"{args.b} vs {args.a}:")
    print(res.summary())
    if not res.ok:
        print(f"graphopt: check: MISMATCH on {sum(not o.ok for o in res.outputs)} output(s)",
              file=sys.stderr)
        return EXIT_MISMATCH
    print("check: ok")
    return EXIT_OK


# ---- ONNX facts without loading weights ----------------------------------------------------------

def inspect_model(m: Any, source: str) -> dict[str, Any]:
    import onnx
    from onnx import helper

    g = m.graph
    inits = list(g.initializer)
    consts = [a.t for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
              for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
    count = nbytes = 0
    external = False
    for t in inits + consts:
        k = 1
        for d in t.dims:
            k *= d
        count += k
        try:
            item = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            item = 1
        nbytes += k * item
        external |= t.data_location == onnx.TensorProto.EXTERNAL
    init_names = {t.name for t in inits}
    return {
        "source": source,
        "ir_version": m.ir_version,
        "opsets": {o.domain: o.version for o in m.opset_import},
        "producer": m.producer_name,
        "inputs": [{"name": v.name, "type": _vi_type(v)} for v in g.input
                   if v.name not in init_names],
        "outputs": [{"name": v.name, "type": _vi_type(v)} for v in g.output],
        "parameters": {"count": count, "bytes": nbytes, "tensors": len(inits) + len(consts),
                       "external": external},
        "nodes": len(g.node),
        "ops": _op_counts(m),
    }


def _vi_type(v: Any) -> str:
    tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
    if tt is None:
        return v.type.WhichOneof("value") or "unknown"
    from .ir.types import DType

    try:
        dt = DType.from_onnx(tt.elem_type).value
    except TypeError:
        dt = f"type{tt.elem_type}"
    if not tt.HasField("shape"):
        return f"{dt}[?]"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tt.shape.dim]
    return f"{dt}[{','.join(dims)}]"


def _op_counts(m: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in m.graph.node:
        k = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        counts[k] = counts.get(k, 0) + 1
    return dict(sorted(counts.items()))


def _onnx_op_counts(path: str) -> dict[str, int]:
    from .frontends.onnx_io import read_model

    return _op_counts(read_model(path, map_initializers=True))  # weights stay in the file


def _file_size(path: str) -> int:
    n = os.path.getsize(path)
    data = path + ".data"
    return n + (os.path.getsize(data) if os.path.exists(data) else 0)


def _check_input_file(path: str) -> None:
    from .errors import FrontendError

    if not os.path.exists(path):
        raise FrontendError("no such file", where=path)
    if os.path.isdir(path):
        raise FrontendError("is a directory, not an ONNX file", where=path)


def _check_output_dir(path: str) -> None:
    """A usage error when the folder a file is to be written into does not exist."""
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise _Usage("output directory does not exist", where=out_dir)


# ---- parser and main -----------------------------------------------------------------------------

class _Usage(Exception):
    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import TARGETS
    from .search import MODES as SEARCH_MODES

    p = argparse.ArgumentParser(prog="graphopt", description="Graph-rewriting optimizer for "
                                "deep-learning models (ONNX in, ONNX out).")
    p.add_argument("--version", action="version", version=f"graphopt {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    o = sub.add_parser("optimize", help="optimize an ONNX model (or a transformers model "
                       "folder)")
    o.add_argument("input", help="input .onnx file, or a local transformers model folder "
                                 "(config.json + weights, as save_pretrained writes it)")
    o.add_argument("-o", "--output", required=True, help="output .onnx file")
    o.add_argument("--target", choices=TARGETS, default=None,
                   help="device to optimize for (default: this machine's GPU, else cpu)")
    o.add_argument("--report", help="write the JSON report here")
    o.add_argument("--inputs", help=".npz with the check's inputs (default: generated)")
    o.add_argument("--passes", nargs="+", default=None, metavar="PASS",
                   help="passes to run instead of the default pipeline")
    o.add_argument("--no-check", action="store_true", help="skip the numeric check")
    o.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="rewrite search budget (default 10; 0: no search), counted as 100 "
                        "candidate graphs a second so the result does not depend on the "
                        "machine's speed; the wall clock stops the search only at 3x + 2 s "
                        "(reported) (docs/determinism.md)")
    o.add_argument("--cost", choices=("analytic", "measured"), default="analytic",
                   help="cost model: roofline estimate, or ops profiled on this machine")
    o.add_argument("--search", choices=SEARCH_MODES, default="backtrack",
                   help="search mode: TASO's cost-ordered backtracking (default), or equality "
                        "saturation on egglog extracted by the cost model (needs "
                        "pip install 'graphopt[egraph]')")
    o.add_argument("--allow-contrib-ops", action="store_true",
                   help="cpu: lower attention to ONNX Runtime's com.microsoft ops where faster "
                        "(the output then runs in ONNX Runtime only)")
    o.add_argument("--fold-initializer-inputs", action="store_true",
                   help="treat initializers that are also graph inputs (IR >= 4: overridable "
                        "by the caller) as constants and optimize through them (default: they "
                        "stay inputs with their default)")
    k = o.add_argument_group("KV cache (docs/kv_cache.md)")
    k.add_argument("--kv-cache", action="store_true",
                   help="derive the decoder-with-past of a decoder and write it as a folder "
                        "(-o OUT_DIR: model.onnx + genai_config.json) for generation loops")
    k.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="with --kv-cache: longest prompt + generation (default 2048, at most "
                        "the model's position table)")
    k.add_argument("--cache", choices=("dynamic", "static", "window"), default=None,
                   help="with --kv-cache: past + new concatenated each step (default; what "
                        "the folder holds), buffers of --max-length slots written in place, or "
                        "a rolling buffer of the model's sliding window (the last two for "
                        "om.generate; the folder keeps the dynamic model)")
    q = o.add_argument_group("quantization (docs/quantization.md)")
    q.add_argument("--quantize", metavar="MODE", default=None,
                   help="int8 | int8-weight | int4 | nf4 | smoothquant | llm-int8")
    q.add_argument("--group-size", type=int, default=None, metavar="G",
                   help="int4: weights per group along the input dim (default 128)")
    q.add_argument("--method", default=None, metavar="M",
                   help="int4: rtn (default) | gptq | awq")
    q.add_argument("--calibration", default=None, metavar="X.npz",
                   help="input batches to calibrate on (default: generated inputs)")
    q.add_argument("--max-error", type=float, default=None, metavar="DB",
                   help="minimum output SQNR vs the float model in dB (default 30 for 8-bit "
                        "modes, 20 for 4-bit)")
    q.add_argument("--activations", default=None, metavar="G",
                   help="int8: auto (default: per layer, per tensor unless per token is over "
                        "3 dB better) | per-tensor | per-token activation quantization")
    q.add_argument("--quantize-lm-head", action="store_true",
                   help="quantize the LM head too (default: kept float)")
    q.add_argument("--no-quantize-embeddings", action="store_true",
                   help="keep embedding tables float (default: int8 per row)")
    q.add_argument("--no-mixed-precision", action="store_true",
                   help="report a missed budget as is instead of moving the costliest layers "
                        "to finer forms")
    f = o.add_argument_group("transformers model folder in")
    f.add_argument("--task", default=None, metavar="TASK",
                   help="causal-lm | masked-lm | seq2seq-lm | sequence-classification | "
                        "token-classification | question-answering | image-classification | "
                        "feature-extraction (default: from the config's architectures)")
    f.add_argument("--batch", type=int, default=None, metavar="B",
                   help="example batch size (default 2)")
    f.add_argument("--seq", type=int, default=None, metavar="S",
                   help="example sequence length (default 16)")
    f.add_argument("--static", action="store_true",
                   help="export with the example sizes fixed (default: dynamic batch and "
                        "sequence)")
    o.add_argument("--html", metavar="FILE", default=None,
                   help="also write one self-contained HTML page: the graphs before and after "
                        "with the changed regions linked to their rules, the op table, the "
                        "check (docs/html_report.md; needs Graphviz's dot)")
    o.add_argument("--bench", type=int, nargs="?", const=50, default=None, metavar="RUNS",
                   help="time the input and the written model in ONNX Runtime, interleaved "
                        "(default 50 runs each; with --html: the latency chart)")
    o.add_argument("-v", "--verbose", action="store_true", help="more output; tracebacks")
    o.set_defaults(func=cmd_optimize)

    i = sub.add_parser("inspect", help="op histogram, parameters, inputs and outputs")
    i.add_argument("input", help=".onnx file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("check", help="compare two ONNX models numerically")
    c.add_argument("a", help="reference .onnx")
    c.add_argument("b", help=".onnx to compare with it")
    c.add_argument("--inputs", help=".npz with the inputs (default: generated)")
    c.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    c.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("explain", help="dry run of optimize: every place each rule looked at "
                       "(attention blocks, norms, matmul groups, ...), rewritten or not, with "
                       "the reason for each one not rewritten")
    e.add_argument("input", help=".onnx file")
    e.add_argument("--target", choices=TARGETS, default="cpu", help="device (default: cpu)")
    e.add_argument("--allow-contrib-ops", action="store_true",
                   help="also consider ONNX Runtime com.microsoft ops, as optimize would")
    e.add_argument("--budget", type=float, default=0.0, metavar="SECONDS",
                   help="also run the search this long and report it (default: 0, off)")
    e.add_argument("--quantize", metavar="MODE", default=None,
                   help="also plan this quantization and list every layer it looked at")
    e.add_argument("--calibration", default=None, metavar="X.npz",
                   help="with --quantize: input batches to calibrate on")
    e.add_argument("--kv-cache", action="store_true",
                   help="also derive the KV cache: each attention's mask, the cache layout and "
                        "the positions that become position_ids, or every refusal")
    e.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="with --kv-cache: longest sequence the masks are measured for")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    e.set_defaults(func=cmd_explain)

    d = sub.add_parser("diff", help="what differs between two ONNX models (--html: both "
                       "graphs, the differing nodes highlighted)")
    d.add_argument("a", help="first .onnx")
    d.add_argument("b", help="second .onnx")
    d.add_argument("--html", metavar="FILE", default=None, help="write the HTML page here")
    d.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    d.set_defaults(func=cmd_diff)

    _add_rules(sub)
    from .kv.cli import add_parser as add_generate

    add_generate(sub)
    from .tp.cli import add_parser as add_shard

    add_shard(sub)
    from graphopt.codegen.cli import add_parser as add_codegen

    add_codegen(sub)
    from .bench_cmd import add_parser as add_bench

    add_bench(sub)
    for cmd in sub.choices.values():  # every command: -q / --quiet
        if "--quiet" not in cmd._option_string_actions:
            cmd.add_argument("-q", "--quiet", action="store_true",
                             help="no progress display (errors are still printed)")
    return p


def cmd_diff(args: argparse.Namespace) -> int:
    from .html_report import diff, diff_html

    _check_input_file(args.a)
    _check_input_file(args.b)
    if args.html:
        _check_output_dir(args.html)
    d = diff_html(args.a, args.b, args.html) if args.html else diff(args.a, args.b)
    print(d.text())
    if args.html:
        print(f"wrote {args.html}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .explanation import explain_model

    _check_input_file(args.input)
    if args.calibration is not None:
        if args.quantize is None:
            raise _Usage("--calibration needs --quantize MODE", where="quantize")
        _check_input_file(args.calibration)
    if args.max_length is not None and not args.kv_cache:
        raise _Usage("--max-length needs --kv-cache", where="kv_cache")
    ex = explain_model(args.input, target=args.target,
                       allow_contrib_ops=args.allow_contrib_ops, budget=args.budget,
                       quantize=args.quantize, calibration=args.calibration,
                       kv_cache=args.kv_cache, max_length=args.max_length)
    print(json.dumps(ex.to_dict(), indent=2) if args.json else ex.text())
    return EXIT_OK


def _add_rules(sub: Any) -> None:
    """``graphopt rules``: the generated rules and the hand-written ones beside the passes
    (``passes/rules``), which verify also replays through the pass they belong to."""
    from graphopt.passes import RULES_DIR as PASS_RULES

    from .replay import replay
    from .subst.cli import add_parser as add_rules
    from .subst.rulefile import RULES_DIR

    add_rules(sub, rule_dirs=(RULES_DIR, PASS_RULES), replay=replay)


def _version() -> str:
    from . import __version__

    return __version__


def classify(e: BaseException) -> int:
    """The exit code for an exception escaping a command."""
    from .errors import (CheckError, ExportError, FrontendError, GraphOptError, ParseError,
                         PassError, ShapeError, UnknownOpError, VerifyError)
    from .inputs import InputsNeeded

    if isinstance(e, InputsNeeded):  # no valid inputs to check with: the user must pass them
        return EXIT_USAGE
    if isinstance(e, CheckError):
        return EXIT_MISMATCH
    if isinstance(e, (FrontendError, ParseError, UnknownOpError, _Usage)):
        return EXIT_USAGE
    if isinstance(e, (PassError, ExportError, VerifyError, ShapeError)):
        return EXIT_INTERNAL
    if isinstance(e, GraphOptError):
        return EXIT_USAGE  # plain GraphOptError: a bad argument (target, inputs, ...)
    if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return EXIT_USAGE
    return EXIT_INTERNAL


def _one_line(e: BaseException) -> str:
    from .errors import GraphOptError

    if isinstance(e, GraphOptError):
        return e.one_line()
    if isinstance(e, _Usage):
        return str(e)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("graphopt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure becomes one line and an exit code
        code = classify(e)
        prefix = {EXIT_MISMATCH: "check failed", EXIT_USAGE: "error",
                  EXIT_INTERNAL: "internal error"}[code]
        print(f"graphopt: {prefix}: {_one_line(e)}", file=sys.stderr)
        if code == EXIT_MISMATCH and getattr(e, "context", None):
            print(e.context, file=sys.stderr)  # type: ignore[attr-defined]
        if verbose:
            traceback.print_exc(file=sys.stderr)
        elif code == EXIT_INTERNAL:
            print("graphopt: run with --verbose for the traceback", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
