"""Quantization for graphopt (issue 11).

The numerics, pure numpy with no IR: ``numerics`` (absmax / zero-point quantization per tensor,
per channel and group-wise in the layouts of ONNX QuantizeLinear / DequantizeLinear, activation
quantizers, SQNR, analytic error bounds), ``nf4`` (NF4 codes, double quantization), ``gptq``,
``awq``, ``smoothquant`` and ``llm_int8``. The other modules here plan a model's quantization
on top of them. Nothing is imported by the package itself, so importing it costs nothing.
"""
