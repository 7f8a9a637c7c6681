"""Reference interpreter: runs a graph with each op's numpy (or torch) semantics."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import GraphOptError
from .graph import Graph
from .node import Node


def _bind(g: Graph, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    if len(args) > len(g.inputs):
        raise GraphOptError(f"graph {g.name} takes {len(g.inputs)} inputs, got {len(args)}")
    feed = dict(zip(g.input_names, args))
    feed.update(kwargs)
    missing = [n for n in g.input_names if n not in feed]
    if missing:
        raise GraphOptError(f"graph {g.name}: missing inputs {missing}")
    return feed


def run(g: Graph, *args: Any, backend: str = "numpy", **kwargs: Any) -> list[Any]:
    """Evaluate ``g`` on inputs given by position or by input name. backend: numpy | torch."""
    from ..ops.symbols import bind_symbols, symbol_values

    feed = _bind(g, args, kwargs)
    # symbolic dims (reshape/expand targets) take their values from the inputs' shapes
    with symbol_values(bind_symbols(g.input_types, [feed[nm] for nm in g.input_names])):
        return _run(g, feed, backend)


def _run(g: Graph, feed: dict[str, Any], backend: str) -> list[Any]:
    from ..ops.registry import get_op

    env: dict[int, tuple[Any, ...]] = {}
    for n in g.nodes:
        if n.op == "input":
            env[id(n)] = (feed[n.attrs["name"]],)
            continue
        xs = [env[id(v.node)][v.index] for v in n.inputs]
        opdef = get_op(n.op)
        try:
            outs = opdef.numpy(xs, n.attrs) if backend == "numpy" else opdef.torch(xs, n.attrs)
        except GraphOptError:
            raise
        except Exception as e:
            raise GraphOptError(f"{type(e).__name__}: {e}", where=_where(n)) from e
        env[id(n)] = tuple(outs)
    return [env[id(v.node)][v.index] for v in g.outputs]


def eval_node(n: Node, xs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    from ..ops.registry import get_op

    return tuple(get_op(n.op).numpy(list(xs), n.attrs))


def _where(n: Node) -> str:
    return f"node {n.op} #{n.uid}" + (f" [{n.origin}]" if n.origin else "")
