"""The quantization section of the report as text: one row per layer, then the totals."""
from __future__ import annotations

from typing import Any

from ..report import human_bytes


def format_quantization(rep: dict[str, Any], verbose: bool = False, max_rows: int = 40) -> str:
    rows = rep.get("layers", [])
    lines = [f"quantization: {rep['mode']} ({rep.get('calibration', '')}), output SQNR budget "
             f"{rep['min_sqnr_db']:g} dB"]
    head = f"  {'layer':<40} {'form':<16} {'before':>10} {'after':>10} {'SQNR dB':>8}"
    lines.append(head)
    shown = rows if verbose or len(rows) <= max_rows else rows[:max_rows]
    for r in shown:
        sq = "" if r.get("sqnr_db") is None else f"{r['sqnr_db']:.1f}"
        form = r["mode"] if "left_float" not in r else "float"
        lines.append(f"  {r['name'][-40:]:<40} {form:<16} {human_bytes(r['bytes_before']):>10} "
                     f"{human_bytes(r['bytes_after']):>10} {sq:>8}"
                     + (f"  ({r['left_float']})" if "left_float" in r else ""))
    if len(shown) < len(rows):
        lines.append(f"  ... {len(rows) - len(shown)} more (--verbose or the JSON report)")
    s = rep.get("summary", {})
    tot = (f"  {s.get('quantized', 0)} of {s.get('layers', 0)} layers quantized; weights "
           f"{human_bytes(s.get('weight_bytes_before', 0))} -> {human_bytes(s.get('weight_bytes_after', 0))}"
           f" ({s.get('weight_ratio')}x)")
    if s.get("quantized_linear_bits_per_weight") is not None:
        tot += f"; quantized linears {s['quantized_linear_bits_per_weight']} bits/weight"
    lines.append(tot)
    mp = rep.get("mixed_precision")
    if mp:
        moved = ", ".join(f"{p['name']} {p['from']}->{p['to']}" for p in mp["promoted"][:8])
        more = len(mp["promoted"]) - 8
        lines.append(f"  mixed precision: {len(mp['promoted'])} layers promoted to meet the budget "
                     f"({mp['before']['sqnr_db']} dB -> {mp['after']['sqnr_db']} dB on the check "
                     f"inputs, {mp['model_runs']} model runs): {moved}"
                     + (f", ... {more} more" if more > 0 else ""))
    for c in rep.get("check", []) or []:
        if c.get("sqnr_db") is not None:
            lines.append(f"  output {c['output']}: SQNR {c['sqnr_db']:.1f} dB vs float")
    return "\n".join(lines)
