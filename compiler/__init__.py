"""graphopt: a graph-rewriting compiler and optimizer for deep-learning models."""
from __future__ import annotations

from .errors import GraphOptError
from .ir.graph import Graph
from .ir.text import parse

__all__ = ["Graph", "GraphOptError", "parse"]
__version__ = "0.1.0"
