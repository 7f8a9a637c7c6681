"""Rematerialization placement: training steps under a memory budget (docs/remat.md)."""
from .module import optimize_training, plan_partition, PlanOptions

__all__ = ["optimize_training", "plan_partition", "PlanOptions"]
