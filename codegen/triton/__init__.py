"""Triton code generation: lowering (lower.py), kernel families (kernels/), cache, autotuning."""
