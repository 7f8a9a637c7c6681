"""The KV-cache part of the optimize report, as text."""
from __future__ import annotations

from typing import Any


def format_kv(rep: dict[str, Any], verbose: bool = False) -> str:
    w = f", window {rep['window']}" if rep.get("window") else ""
    lines = [f"kv cache ({rep['cache']}): {rep['layers']} layers x {rep['kv_heads']} kv heads "
             f"(of {rep['heads']}) x {rep['head_size']}{w}; up to {rep['context_length']} "
             f"tokens; decode graph {rep['decode_nodes']} nodes"]
    chk = rep.get("check")
    if chk:
        lines.append(f"  check: prefill + decode steps {chk['chunks']} (batch {chk['batch']}) "
                     f"vs the original on the whole sequence: ok (max abs {chk['max_abs']:.3g})")
    else:
        lines.append("  check: not run (--no-check)")
    st = rep.get("check_static")
    if st:
        lines.append(f"  check of the static-buffer decoder: ok (max abs {st['max_abs']:.3g})")
    if verbose:
        lines += [f"  {m}" for m in rep.get("masks", [])]
    lines += [f"  note: {n}" for n in rep.get("notes", [])]
    return "\n".join(lines)
