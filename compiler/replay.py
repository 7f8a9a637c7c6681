"""Replay a hand-written rule through the pass it belongs to.

``graphopt rules verify`` proves that a rule's lhs equals its rhs; the replay checks that the
pass named by the rule (``pass:``) really rewrites that lhs into exactly that rhs, as
``optimize()`` runs it: simplify first (cleanup and canonical forms, to a fixed point), then the
pass, then cleanup. Rules of the simplify passes themselves replay through their pass alone. So
the proven statement and what the engine does are the same statement, and a rule's text is
also its test.
"""
from __future__ import annotations

import re
from typing import Any

from .errors import GraphOptError
from .ir.graph import Graph
from .ir.node import Node
from .ir.text import print_graph

# passes that run inside the simplify step (replayed alone)
SIMPLIFY = frozenset({"canonicalize", "cleanup", "constant_fold", "cse", "remove_noops",
                      "dead_code"})
# passes of the quantize step (after simplify, fuse and search; followed by its own cleanup,
# whose folds never grow a constant): replayed as that step runs them
QUANTIZE = frozenset({"quant_lowering", "smoothing_fold", "quant_gpu_lowering"})


def _rebind(g: Graph, inputs: dict[str, Node]) -> Graph:
    """``g`` rebuilt over the given input nodes (by name)."""
    moved = g.replace({n.out: inputs[n.attrs["name"]].out for n in g.inputs})
    return Graph(list(inputs.values()), moved.outputs, g.output_names, "g")


def rewrite_with_pass(rule: Any) -> Graph:
    """The rule's lhs as ``optimize()`` would leave it after the rule's pass."""
    from .pipeline import default_passes, pass_by_name
    from .rewrite.passes import Pipeline

    name = rule.pass_name or rule.source
    passes = pass_by_name(name)
    if name in QUANTIZE:
        from graphopt.passes.quant_lowering import cleanup_after_quantize

        passes = [*passes, Pipeline(cleanup_after_quantize(), name="cleanup", fixed_point=True)]
    elif name not in SIMPLIFY:
        from graphopt.passes.cleanup import cleanup_passes

        passes = [Pipeline(default_passes(), name="simplify", fixed_point=True), *passes,
                  Pipeline(cleanup_passes(), name="cleanup", fixed_point=True)]
    return Pipeline(passes, name=f"replay {rule.name}").run(rule.lhs).graph


def replay(rule: Any) -> str | None:
    """None when the rule's pass rewrites its lhs into its rhs; otherwise what differs."""
    try:
        got = rewrite_with_pass(rule)
    except GraphOptError as e:
        return f"pass {rule.pass_name or rule.source}: {e.one_line()}"
    ins = {n.attrs["name"]: n for n in rule.lhs.inputs}
    want = _rebind(rule.rhs, ins)
    got = Graph(list(ins.values()), got.outputs, got.output_names, "g")
    # origins are provenance, not structure (impure nodes such as collectives are never
    # interned with the rule's own nodes, so theirs show)
    a, b = (re.sub(r"   # .*", "", print_graph(x)) for x in (got, want))
    if a == b:
        return None
    return f"the pass gives\n{a}but the rule says\n{b}"
