"""Tensor parallelism (``graphopt.shard``, ``graphopt shard``; docs/tensor_parallel.md).

* ``stage``: ``shard(model, example_inputs, world_size, target) -> ShardPlan``: prepare (simplify,
  fuse, unmerge fused projections), search the plan, project the ranks' programs, check them.
* ``plan``: weight slots, pricing a plan (``Evaluator``: the rewrite pass + the cost model with
  the link term), the coordinate-descent ``search``.
* ``ranks``: ``project`` (global view -> a rank's program) and ``merge`` (the inverse, for the
  check); the rewrite rules are ``graphopt.passes.tensor_parallel``.
* ``report``: the report and its text form. ``save`` / ``folder``: the shard folder (per-rank
  program + weights, shard.json, launch.sh). ``graphopt.launch`` runs a folder under torchrun;
  ``run``: ``run_distributed`` / ``torchrun``; ``count``: collectives counted by torch.profiler.
* ``cli``: ``graphopt shard IN.onnx --tp N -o OUT_DIR``.
"""
