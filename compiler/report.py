"""The optimization report: a JSON-able dict, and its text forms (before/after table)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Sequence

from .ir.graph import Graph
from .ir.types import TensorType


def param_stats(g: Graph) -> dict[str, int]:
    """Constants of the graph: element count and bytes (each constant counted once)."""
    count = 0
    nbytes = 0
    n_tensors = 0
    for n in g.nodes:
        if n.op != "constant":
            continue
        c = n.const
        k = 1
        for d in c.shape:
            k *= d
        count += k
        nbytes += c.nbytes
        n_tensors += 1
    return {"tensors": n_tensors, "params": count, "bytes": nbytes}


def _type_dict(name: str, t: Any) -> dict[str, Any]:
    if isinstance(t, TensorType):
        return {"name": name, "dtype": t.dtype.value,
                "shape": None if t.shape is None else list(t.shape)}
    return {"name": name, "type": str(t)}


def graph_summary(g: Graph) -> dict[str, Any]:
    ps = param_stats(g)
    return {
        "ops": g.op_counts(),
        "nodes": sum(1 for n in g.nodes if n.op not in ("input", "constant")),
        "params": ps["params"],
        "param_bytes": ps["bytes"],
        "param_tensors": ps["tensors"],
        "inputs": [_type_dict(n, t) for n, t in zip(g.input_names, g.input_types)],
        "outputs": [_type_dict(n, v.type) for n, v in zip(g.output_names, g.outputs)],
    }


def opaque_reason(n: Any) -> str | None:
    """Why a frontend kept ``n`` opaque, where it said so."""
    r = n.attrs.get("reason")
    if r:
        return str(r)
    if "graphopt.frontends.onnx_opaque" in sys.modules:
        r = sys.modules["graphopt.frontends.onnx_opaque"].opaque_reason(n)
        if r:
            return str(r)
    detail = n.origin.detail if n.origin else ""
    if "kept opaque:" in detail:
        return detail.split("kept opaque:", 1)[1].strip()
    return None


def opaque_nodes(g: Graph, original: Graph | None = None) -> list[dict[str, str]]:
    """Nodes the optimizer cannot see inside, with the reason each stayed opaque. Passes rebuild
    opaque nodes over new inputs, so reasons are also looked up by origin in ``original``."""
    by_origin: dict[Any, str] = {}
    for n in (original.nodes if original is not None else ()):
        if n.op == "opaque" and n.origin is not None:
            r = opaque_reason(n)
            if r:
                by_origin[n.origin] = r
    out = []
    for n in g.nodes:
        if n.op != "opaque":
            continue
        domain = n.attrs.get("domain", "") or ""
        op_type = str(n.attrs["op_type"])
        reason = opaque_reason(n) or by_origin.get(n.origin) or (
            f"graphopt has no op for {domain + '::' if domain else ''}{op_type}")
        out.append({"op_type": op_type, "domain": domain,
                    "name": n.origin.name if n.origin else f"#{n.uid}", "reason": reason})
    return out


def build_report(*, source: str, target: str, before: Graph, after: Graph,
                 passes: Sequence[Mapping[str, Any]], steps: Mapping[str, float],
                 check: Mapping[str, Any] | None) -> dict[str, Any]:
    b, a = graph_summary(before), graph_summary(after)
    return {
        "source": source,
        "target": target,
        "before": b,
        "after": a,
        "passes": list(passes),
        "rewrites": _rewrite_totals(passes),
        "steps": {k: round(v, 6) for k, v in steps.items()},
        "opaque": opaque_nodes(after, before),
        "check": dict(check) if check is not None else None,
    }


def _rewrite_totals(passes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counters summed over all pass runs, keyed 'pass.counter' (only numeric, non-zero; the
    counts of places left as they were, '*not_*' / '*_kept', are not rewrites: the passes'
    candidates list them with their reasons)."""
    tot: dict[str, int] = {}
    for p in passes:
        for k, v in p.get("stats", {}).items():
            if isinstance(v, bool) or not isinstance(v, int) or k == "nodes":
                continue
            if "not_" in k or k.endswith("_kept") or k.startswith("skipped_"):
                continue
            key = f"{p['name']}.{k}"
            tot[key] = tot.get(key, 0) + v
    return {k: v for k, v in sorted(tot.items()) if v}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def comparison_table(before: Mapping[str, int], after: Mapping[str, int],
                     extra: Sequence[tuple[str, str, str]] = (), title: str = "op") -> str:
    """A before/after table of counts (like onnxsim's), plus extra rows (label, before, after)."""
    keys = sorted(set(before) | set(after))
    rows = [(k, str(before.get(k, 0)), str(after.get(k, 0))) for k in keys]
    rows += list(extra)
    w0 = max([len(title)] + [len(r[0]) for r in rows])
    w1 = max([len("before")] + [len(r[1]) for r in rows])
    w2 = max([len("after")] + [len(r[2]) for r in rows])
    sep = f"+-{'-' * w0}-+-{'-' * w1}-+-{'-' * w2}-+"
    lines = [sep, f"| {title:<{w0}} | {'before':>{w1}} | {'after':>{w2}} |", sep]
    n_ops = len(keys)
    for i, (k, x, y) in enumerate(rows):
        if i == n_ops and extra:
            lines.append(sep)
        lines.append(f"| {k:<{w0}} | {x:>{w1}} | {y:>{w2}} |")
    lines.append(sep)
    return "\n".join(lines)


def format_report(report: Mapping[str, Any]) -> str:
    """Text form of a report: the op table, sizes, rewrites, opaque nodes and the check."""
    b, a = report["before"], report["after"]
    extra = [("nodes", str(b["nodes"]), str(a["nodes"])),
             ("params", str(b["params"]), str(a["params"])),
             ("param bytes", human_bytes(b["param_bytes"]), human_bytes(a["param_bytes"]))]
    out = [comparison_table(b["ops"], a["ops"], extra)]
    if report.get("rewrites"):
        out.append("rewrites: " + ", ".join(f"{k}={v}" for k, v in report["rewrites"].items()))
    if report.get("search"):
        from .search.stage import format_search

        out.append(format_search(report["search"]))
    if report.get("opaque"):
        counts: dict[str, int] = {}
        for o in report["opaque"]:
            counts[o["op_type"]] = counts.get(o["op_type"], 0) + 1
        out.append("opaque (not optimized): " +
                   ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    chk = report.get("check")
    if chk:
        state = "ok" if chk["ok"] else "MISMATCH"
        out.append(f"check vs {chk.get('reference', 'original')}: {state} "
                   f"(max abs {chk['max_abs']}, max rel {chk['max_rel']})")
    return "\n".join(out)


def explain_text(report: Mapping[str, Any]) -> str:
    """What was done and what could not be: rewrites by name, the opaque nodes' reasons, and
    every place a rule looked at and did not rewrite, with its reason."""
    lines = [f"target: {report['target']}"]
    rw = report.get("rewrites") or {}
    lines.append("rewrites applied:" if rw else "rewrites applied: none")
    lines += [f"  {k}: {v}" for k, v in rw.items()]
    op = report.get("opaque") or []
    lines.append("opaque nodes (the optimizer cannot see inside):" if op else "opaque nodes: none")
    lines += [f"  {o['name']} ({o['op_type']}): {o['reason']}" for o in op]
    for p in report.get("passes", []):
        notes = {k: v for k, v in p.get("stats", {}).items() if isinstance(v, list)}
        for k, v in notes.items():
            for item in v:
                lines.append(f"  {p['name']} {k}: {item}")
        for c in p.get("not_rewritten", []):  # the pass's candidates that did not match
            lines.append(f"  {p['name']}: {c['kind']} at {c['anchor']} not rewritten: rule "
                         f"{c['rule']}, node {c['culprit'] or c['anchor']}: {c['reason']}")
    return "\n".join(lines)


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as JSON to ``path`` through ``onnx_io.AtomicFiles`` (a temp file renamed
    into place, with the mode ``open()`` would give it): never a partial file."""
    from pathlib import Path

    from .frontends.onnx_io import AtomicFiles

    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    with AtomicFiles() as af:
        af.open(Path(os.fspath(path))).write(text.encode())


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "value"):
        return o.value
    return str(o)
