"""The transformer fusion passes for a target, in the order they run (after the simplifying
passes of ``pipeline.default_passes``; run those again afterwards).

    fusion_passes("cpu", allow_contrib_ops=False)

* attention_flash, rms_norm_fusion, gelu_fusion, rotary_fusion: target independent (fused ops
  every backend has);
* matmul_fusion: the cost model of ``target`` decides each merge;
* silu_fusion: x * sigmoid(x) -> silu, after matmul_fusion so its gated-MLP report sees merged
  gate/up matmuls;
* ort_contrib_attention (mode auto): only with ``allow_contrib_ops`` and target ``cpu`` (the
  output then runs in ONNX Runtime only: com.microsoft MultiHeadAttention / GroupQueryAttention
  where those are faster on this CPU, see passes/ort_attention.py);
* skip_norm_fusion (mode auto): only with ``allow_contrib_ops`` and target ``cpu``: residual add
  + layer_norm / rms_norm -> com.microsoft Skip(Simplified)LayerNormalization; mode auto keeps
  every place (both kernels are slower than the standard ops on this CPU, reported with the
  numbers; passes/skip_norm_fusion.py);
* attention_chunking: target ``cpu``, last: splits attention blocks whose score matrix exceeds
  16 MiB into query chunks (bounded memory; causal chunks skip the masked work), see
  passes/attention_chunking.py.

Export opset: the fused graph needs opset >= 23 for ``attention`` as one ONNX Attention node
(>= 20 for Gelu; below that both export as compositions), plus com.microsoft 1 when contrib ops
were allowed. ``silu`` exports as Mul(x, Sigmoid(x)) at every opset (faster in ONNX Runtime 1.32
than Swish-24), so it does not raise the opset (docs/fusions.md).
"""
from __future__ import annotations

from graphopt.rewrite.passes import Pass

FUSED_OPSET = 23  # ONNX Attention (and RMSNormalization, RotaryEmbedding); Gelu needs 20


def fusion_passes(target: str, allow_contrib_ops: bool = False) -> list[Pass]:
    from .attention_flash import AttentionFlash
    from .gelu_fusion import GeluFusion
    from .matmul_fusion import MatmulFusion
    from .norm_fusion import RmsNormFusion
    from .ort_attention import OrtContribAttention
    from .rotary_fusion import RotaryFusion
    from .silu_fusion import SiluFusion
    from .skip_norm_fusion import SkipNormFusion

    passes: list[Pass] = [AttentionFlash(), RmsNormFusion(), GeluFusion(), RotaryFusion(),
                         MatmulFusion(target), SiluFusion()]
    if allow_contrib_ops and target == "cpu":
        passes.append(OrtContribAttention("auto"))
        passes.append(SkipNormFusion("auto"))
    if target == "cpu":
        from .attention_chunking import AttentionChunking

        passes.append(AttentionChunking())  # after the contrib lowering: what it left
    return passes
