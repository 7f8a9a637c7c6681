"""The tensor-parallel report: the plan per weight, the collectives and why each is there,
parameter bytes per rank, bytes sent per step, and the cost model's estimated speedup."""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..cost.model import CostModel
from ..ir.graph import Graph
from ..ir.node import Node
from ..ops.registry import get_op, nbytes
from .plan import Evaluated, Evaluator, SearchLog, WeightSlot, plan_table, weight_bytes
from .ranks import is_global


def _readers(g: Graph) -> dict[int, list[Node]]:
    out: dict[int, list[Node]] = {}
    for n in g.nodes:
        for v in n.inputs:
            out.setdefault(id(v.node), []).append(n)
    return out


def _source_weight(n: Node, names: dict[int, str]) -> str | None:
    """The split weight nearest above rank 0's operand of a global collective."""
    seen: set[int] = set()
    stack = [n.inputs[0].node]
    while stack:
        m = stack.pop(0)
        if id(m) in seen:
            continue
        seen.add(id(m))
        if m.op == "shard" and m.inputs[0].node.op == "constant":
            name = names.get(id(m.inputs[0].node.attrs["data"]))
            if name is not None:
                return name
        stack.extend(v.node for v in m.inputs)
    return None


def _reason(n: Node, readers: dict[int, list[Node]], why: dict[int, str]) -> str:
    if n.op == "all_reduce":
        return "adds the partial sums of a matmul whose contraction is split"
    rs = readers.get(id(n), [])
    if not rs:
        return "a graph output (every rank returns it whole)"
    parts = []
    for u in rs:
        parts.append(f"{u.op}: {why.get(id(u), 'reads it whole')}")
    return "; ".join(sorted(set(parts)))


def collectives(best: Evaluated, slots: list[WeightSlot]) -> list[dict[str, Any]]:
    """Each collective of the sharded graph (global view): op, bytes one rank sends, why."""
    g = best.sharded
    readers = _readers(g)
    why = {id(c.anchor): c.reason for c in best.candidates if not c.matched and c.reason}
    names = {s.key: s.name for s in slots}
    out = []
    for n in g.nodes:
        if not is_global(n):
            continue
        steps, sent = get_op(n.op).transfer(n.inputs[0].type, n.attrs)  # type: ignore[attr-defined]
        out.append({"op": n.op, "payload_bytes": int(nbytes(n.inputs[0].type)),
                    "sent_bytes_per_rank": int(sent), "type": str(n.out_types[0]),
                    "weight": _source_weight(n, names), "why": _reason(n, readers, why),
                    "at": str(n.origin) if n.origin is not None else ""})
    return out


def per_layer(colls: list[dict[str, Any]], slots: list[WeightSlot]) -> dict[str, Any]:
    """Collectives per layer: weights alike in what reads them (the same weight of each layer:
    ``WeightSlot.role``) number the layers; a collective counts for the role of the weight it
    follows, shared over the weights of that role."""
    size = Counter(s.role for s in slots)
    role_of = {s.name: s.role for s in slots}
    repeats = Counter(v for v in size.values() if v > 1)  # how many roles repeat k times
    layers = min(repeats, key=lambda k: (-repeats[k], k)) if repeats else 1
    per: Counter = Counter()
    for c in colls:
        role = role_of.get(c["weight"]) if c["weight"] else None
        if role is not None and layers > 1 and size[role] % layers == 0:
            per[c["op"]] += 1
    return {"layers": layers, "per_layer": {k: v / layers for k, v in per.items()},
            "outside_layers": dict(Counter(c["op"] for c in colls) - per)}


def _why_replicated(table: list[dict[str, Any]], slots: list[WeightSlot], best: Evaluated,
                    ev: Evaluator) -> None:
    """For each weight the plan keeps whole though an axis splits it: what splitting it alone
    would cost more (the price of the best plan with that one change)."""
    for row, s in zip(table, slots):
        if row["axis"] is not None or not s.axes:
            continue
        alts = []
        for ax in s.axes:
            e = ev({**best.splits, s.key: ax})
            extra = Counter(n.op for n in e.sharded.nodes if is_global(n)) - Counter(
                n.op for n in best.sharded.nodes if is_global(n))
            alts.append((e.cost - best.cost, ax, dict(extra)))
        d, ax, extra = min(alts)
        row["why_not"] = (f"splitting it along axis {ax} would cost {d * 1e6:+.1f} us per step"
                          + (f" (adds {', '.join(f'{v} {k}' for k, v in sorted(extra.items()))})"
                             if extra else ""))


def build_report(source: str, target: str, world: int, original: Graph, prepared: Graph,
                 best: Evaluated, slots: list[WeightSlot], log: SearchLog, ev: Evaluator,
                 chk: Any, times: dict[str, float]) -> dict[str, Any]:
    single = CostModel(ev.device)(prepared)
    total = weight_bytes(prepared)
    colls = collectives(best, slots)
    table = plan_table(prepared, slots, best.splits)
    counts = Counter(c["op"] for c in colls)
    split = sum(1 for r in table if r["split"] != "replicated")
    rank_bytes = [int(b) for b in best.weight_bytes]
    summary = {
        "world_size": world, "target": target,
        "split_weights": split, "replicated_weights": len(table) - split,
        "collectives_per_step": sum(counts.values()),
        "collectives": dict(counts),
        "sent_bytes_per_rank_per_step": sum(c["sent_bytes_per_rank"] for c in colls),
        "payload_bytes_per_step": sum(c["payload_bytes"] for c in colls),
        "param_bytes": int(total), "rank_param_bytes": rank_bytes,
        "max_rank_param_fraction": max(rank_bytes) / total if total else 0.0,
        "time_one_device_s": single, "time_per_rank_s": [float(t) for t in best.times],
        "estimated_speedup": single / best.time if best.time > 0 else 0.0,
        "link": {"bandwidth_bytes_per_s": ev.device.link_bandwidth,
                 "latency_s_per_step": ev.device.link_latency},
        "memory_weight_s_per_byte": ev.memory_weight,
    }
    if split == 0:
        summary["note"] = ("no split pays for its communication on this target: every weight "
                           "stays replicated (each rank runs the whole model)")
    _why_replicated(table, slots, best, ev)
    return {
        "source": source, "summary": summary, "plan": table, "collectives": colls,
        "collectives_by_layer": per_layer(colls, slots),
        "search": {"plans_priced": log.evaluations, "rounds": log.rounds,
                   "seconds": round(log.seconds, 3), "moves": log.moves},
        "check": [c.to_dict() for c in chk] if chk is not None else None,
        "steps": {k: round(v, 3) for k, v in times.items()},
    }


def format_report(rep: dict[str, Any]) -> str:
    """The report as text (the CLI prints it)."""
    s = rep["summary"]
    lines = [f"tensor parallel: {s['world_size']} ranks, target {s['target']}",
             f"  weights: {s['split_weights']} split, {s['replicated_weights']} replicated",
             f"  parameters per rank: " + ", ".join(f"{b / 2**20:.2f} MiB" for b in s["rank_param_bytes"])
             + f" of {s['param_bytes'] / 2**20:.2f} MiB (max {s['max_rank_param_fraction']:.1%})",
             f"  collectives per step: {s['collectives_per_step']} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(s['collectives'].items())) or 'none'}), "
             f"{s['payload_bytes_per_step'] / 2**10:.1f} KiB payload, "
             f"{s['sent_bytes_per_rank_per_step'] / 2**10:.1f} KiB sent per rank",
             f"  estimated step: {s['time_one_device_s'] * 1e6:.1f} us on one device, "
             f"{max(s['time_per_rank_s']) * 1e6:.1f} us per rank -> speedup "
             f"{s['estimated_speedup']:.2f}x"]
    lay = rep["collectives_by_layer"]
    if lay["layers"] > 1:
        lines.append(f"  per layer ({lay['layers']} alike): "
                     + (", ".join(f"{k} {v:g}" for k, v in sorted(lay["per_layer"].items()))
                        or "no collectives"))
    if "note" in s:
        lines.append(f"  {s['note']}")
    if rep.get("torchrun"):
        t = rep["torchrun"]
        lines.append(f"  torchrun run of the folder: max relative error "
                     f"{t['max_relative_error']:.2g} vs the original; collectives per rank: "
                     + "; ".join(f"rank {c['rank']}: {c['all_reduce']} all_reduce, "
                                 f"{c['all_gather']} all_gather" for c in t["collectives"] or []))
    lines.append("  plan:")
    for r in rep["plan"]:
        extra = f"  ({r['why_not']})" if "why_not" in r else ""
        lines.append(f"    {r['weight']:48s} {str(r['shape']):16s} {r['split']}{extra}")
    lines.append("  collectives:")
    for c in rep["collectives"]:
        lines.append(f"    {c['op']:14s} {c['type']:24s} {c['why']}")
    return "\n".join(lines)
