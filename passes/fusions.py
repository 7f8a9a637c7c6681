"""The transformer fusion passes for a target, in the order they run (after the simplifying
passes of ``pipeline.default_passes``; run those again afterwards).

    fusion_passes("cpu", allow_contrib_ops=False)

* attention_flash, rms_norm_fusion, gelu_fusion, rotary_fusion: target independent (fused ops
  every backend has);
* matmul_fusion: the cost model of ``target`` decides each merge;
* silu_fusion: x * sigmoid(x) -> silu, after matmul_fusion so its gated-MLP report sees merged
  gate/up matmuls;
* ort_contrib_attention and skip_norm_fusion (mode auto): only with ``allow_contrib_ops`` (the
  output then runs in ONNX Runtime only); each place is lowered to the com.microsoft op only
  where the target's cost model prices it faster (on ``cpu``: the kernels timed on this host);
* attention_chunking, last: long attention blocks split into query chunks where the scores
  outgrow the device's last-level cache and the target's cost model prices the chunks no
  slower (on GPU targets the flash kernel never materializes the scores, so blocks stay whole).

Every pass gets the target in its options. Export opset: the fused graph needs opset >= 23 for
``attention`` as one ONNX Attention node (>= 20 for Gelu; below that both export as
compositions), plus com.microsoft 1 when contrib ops were allowed (``OpDef.onnx_min_opset``).
``silu`` exports as Mul(x, Sigmoid(x)) at every opset (faster in ONNX Runtime 1.32 than
Swish-24), so it does not raise the opset (docs/fusions.md).
"""
from __future__ import annotations

from graphopt.rewrite.passes import Pass


def fusion_passes(target: str, allow_contrib_ops: bool = False) -> list[Pass]:
    from .attention_chunking import AttentionChunking
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
    if allow_contrib_ops:
        passes.append(OrtContribAttention("auto", options={"target": target}))
        passes.append(SkipNormFusion("auto", target=target))
    # after the contrib lowering: what it left
    passes.append(AttentionChunking(options={"target": target}))
    return passes
