"""``graphopt explain MODEL``: every attention block and every candidate matmul group, fused or
not, and for each one not fused the rule, the node and the failed condition.

The model is loaded, simplified (cleanup + canonical forms, as ``optimize`` does), and the
fusion matchers are run in report-only mode: nothing is rewritten here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ir.graph import Graph


@dataclass
class Explanation:
    source: str
    target: str
    candidates: list[Any]  # graphopt.passes.fusion_report.Candidate

    def of_kind(self, kind: str) -> list[Any]:
        return [c for c in self.candidates if c.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target,
                "candidates": [c.to_dict() for c in self.candidates]}

    def text(self) -> str:
        lines = [f"{self.source} (target {self.target})"]
        for kind, title in (("attention", "attention blocks"),
                            ("matmul_group", "matmul groups (shared input, constant weights)"),
                            ("rms_norm", "RMSNorm compositions"),
                            ("gelu", "GELU compositions"),
                            ("rotary", "rotary embeddings"),
                            ("silu", "SiLU compositions (x * sigmoid(x))"),
                            ("gated_mlp", "SiLU-gated MLPs (silu(gate) * up)"),
                            ("skip_norm", "residual add + norm (com.microsoft Skip*Normalization)"),
                            ("contrib_attention", "com.microsoft attention lowering"),
                            ("attention_chunks", "long attention blocks split into query chunks")):
            cs = self.of_kind(kind)
            if not cs and kind not in ("attention", "matmul_group"):
                continue  # the two headline kinds always print, the others when found
            fused = sum(1 for c in cs if c.fused)
            lines.append(f"{title}: {len(cs)} found, {fused} fused, {len(cs) - fused} not fused")
            lines += [f"  {c.describe()}" for c in cs]
        return "\n".join(lines)


def candidates(g: Graph, target: str = "cpu", allow_contrib_ops: bool = False) -> list[Any]:
    """The fusion candidates of a simplified graph (attention first, then matmul groups, RMSNorm
    and GELU compositions, rotary embeddings, SiLU compositions and gated MLPs and, with contrib ops
    allowed on cpu, the residual add + norm places and the com.microsoft attention lowering; on
    cpu the attention blocks long enough to split into query chunks)."""
    from graphopt.passes.attention_flash import AttentionFlash, find_attention
    from graphopt.passes.gelu_fusion import find_gelu
    from graphopt.passes.matmul_fusion import MatmulFusion
    from graphopt.passes.norm_fusion import find_rms
    from graphopt.passes.ort_attention import find_contrib
    from graphopt.passes.rotary_fusion import find_rotary

    att, _ = find_attention(g)
    # matmul groups are looked for after attention fusion, as the pipeline runs them
    fused = AttentionFlash().run(g).graph
    mm, _ = MatmulFusion(device=target).candidates(fused)
    rms = find_rms(g)[0]
    gelu, _ = find_gelu(g)
    rotary, _ = find_rotary(g)
    silu, gated, skip = _silu_and_skip_norm(g, fused, target, allow_contrib_ops)
    contrib = find_contrib(fused)[0] if allow_contrib_ops and target == "cpu" else []
    chunks: list[Any] = []
    if target == "cpu":
        from graphopt.passes.attention_chunking import AttentionChunking

        chunks = AttentionChunking().find(fused)[0]
    return (list(att) + list(mm) + list(rms) + list(gelu) + list(rotary) + silu + gated + skip
            + list(contrib) + chunks)


def _silu_and_skip_norm(g: Graph, fused: Graph, target: str, allow_contrib_ops: bool
                        ) -> tuple[list[Any], list[Any], list[Any]]:
    """SiLU compositions of ``g``; gated MLPs after matmul merging and SiLU fusion (as the
    pipeline runs them); with contrib ops on cpu, the residual add + norm places."""
    from graphopt.passes.matmul_fusion import MatmulFusion
    from graphopt.passes.silu_fusion import SiluFusion, find_gated_mlp, find_silu

    silu, _ = find_silu(g)
    merged = MatmulFusion(device=target).run(fused).graph
    gated = find_gated_mlp(SiluFusion().run(merged).graph)
    skip: list[Any] = []
    if allow_contrib_ops and target == "cpu":
        from graphopt.passes.norm_fusion import RmsNormFusion
        from graphopt.passes.skip_norm_fusion import find_skip_norm

        skip = find_skip_norm(RmsNormFusion().run(g).graph)[0]
    return list(silu), gated, list(skip)


def explain_model(model: Any, example_inputs: Any = None, target: str = "cpu",
                  allow_contrib_ops: bool = False) -> Explanation:
    """Explain the fusions of ``model`` (an .onnx path, ModelProto, nn.Module with example
    inputs, or Graph)."""
    from .pipeline import check_target, default_passes, lift, resolve_source
    from .rewrite.passes import Pipeline

    target = check_target(target)
    src = resolve_source(model, example_inputs)
    g = lift(src)
    g = Pipeline(default_passes(), name="simplify", fixed_point=True).run(g).graph
    return Explanation(src.label, target, candidates(g, target, allow_contrib_ops))
