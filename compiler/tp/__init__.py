"""Tensor parallelism: sharding plans as verified rewrites, rank programs, torch.distributed execution."""
