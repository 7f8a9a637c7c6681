"""graphopt: a graph-rewriting compiler and optimizer for deep-learning models.

Public API: ``optimize``, ``load``, ``save``, ``explain``, ``shard``, ``optimize_training``,
``Graph``, ``parse``
(plus ``OptimizedModel``, ``ShardPlan``, ``GraphOptError``, ``CheckError``, ``InputsNeeded``). Heavy modules (torch, onnx,
onnxruntime) load only when a function needs them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CheckError, GraphOptError
from .ir.graph import Graph
from .ir.text import parse

if TYPE_CHECKING:
    from .api import OptimizedModel, explain, load, optimize, save
    from .inputs import InputsNeeded
    from .remat import optimize_training
    from .tp.stage import ShardPlan, shard

__all__ = ["CheckError", "Graph", "GraphOptError", "InputsNeeded", "OptimizedModel", "ShardPlan", "explain",
           "load", "optimize", "optimize_training", "parse", "save", "shard"]
__version__ = "0.1.0"

_LAZY = {"optimize", "load", "save", "explain", "OptimizedModel"}
_LAZY_TP = {"shard", "ShardPlan"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    if name in _LAZY_TP:
        from .tp import stage

        return getattr(stage, name)
    if name == "InputsNeeded":
        from .inputs import InputsNeeded

        return InputsNeeded
    if name == "optimize_training":
        from .remat import optimize_training

        return optimize_training
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")
