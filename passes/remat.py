"""Recompute a saved forward value in the backward from saved ancestors (rematerialization).

The graph this pass rewrites is a training step's backward as IR (``graphopt.remat.joint``:
``JointGraph.ir_backward``): it reads the primals, the tangents and one ``input`` node per
forward value it needs, named by the value's FX node (the all-saved plan). The pass's option
``recompute`` is a ``Recipes`` table (the forward's IR values by name, the plan's saved and
recomputed names, which values come from random ops). Matched meaning, anchored at every node
``n`` reading such an input ``x`` the plan recomputes:

    n(..., x, ...)   ->   n(..., f(a, b, ...), ...)

where ``f`` is the IR computation of ``x`` in the forward (its op(s), attributes and input order
unchanged) and each of its inputs ``a`` is the plan's saved input node of that name, a primal, or
itself recomputed the same way (memoized: a value recomputed for several readers is one node).
The replacement is the forward's own computation over the same values, so it is correct by
construction; what can fail is availability, and those are the rule's refusals: ``x`` comes from a
random op (dropout's mask and output are saved, never recomputed: a rerun would draw new
numbers), or an input of its computation is neither saved nor recomputed by the plan.

After the pass the graph's inputs are exactly the values the plan keeps from the forward (plus
primals and tangents); ``graphopt.remat`` checks they equal the placeholders of the backward FX
module AOTAutograd runs, and prices the added compute with the cost model on the two IR graphs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph, toposort
from graphopt.ir.node import Node, Value, input_node
from graphopt.rewrite.context import MatchContext
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import PassResult, RewritePass
from graphopt.rewrite.rule import Rule

Key = tuple[int, int]


@dataclass
class Recipes:
    """How each forward value is computed, and the plan: ``values`` maps an FX name to its IR
    value (or tuple of values), ``reads`` to the FX names it reads, ``getitem`` the names that
    pick one output of a tuple-valued call (their one read is that call)."""

    values: Mapping[str, Any]
    reads: Mapping[str, Sequence[str]]
    getitem: frozenset[str]
    saved: frozenset[str]
    recomputed: frozenset[str]
    rng: frozenset[str]
    primals: frozenset[str]
    memo: dict[str, dict[Key, Value]] = field(default_factory=dict)

    def recompute(self, name: str) -> dict[Key, Value]:
        """The forward IR values of ``name`` mapped to their recomputation over saved inputs."""
        if name in self.memo:
            return self.memo[name]
        if name in self.rng:
            raise fail(f"{name} comes from a random op: it is saved, never recomputed", None)
        if name not in self.recomputed:
            raise fail(f"{name} is neither saved nor recomputed by the plan", None)
        own = _keys(self.values[name])
        if name in self.getitem:
            parent = self.reads[name][0]
            pmap = self.recompute(parent) if parent not in self.saved else {}
            out = {k: pmap[k] for k in own if k in pmap}
            if len(out) != len(own):
                raise fail(f"{name} picks an output of {parent}, which is not recomputed", None)
            self.memo[name] = out
            return out
        boundary: dict[Key, Value] = {}
        for u in self.reads[name]:
            if u in self.primals:
                continue
            if u in self.saved:
                for k, v in _items(self.values[u]):
                    boundary[k] = input_node(u, v.type).out
            else:
                boundary.update(self.recompute(u))
        outs = [v for _, v in _items(self.values[name])]
        new = rebuild(outs, boundary)
        out = {k: v for k, v in zip(own, new)}
        self.memo[name] = out
        return out


def _items(v: Any) -> list[tuple[Key, Value]]:
    vals = [v] if isinstance(v, Value) else [x for x in v if isinstance(x, Value)]
    return [((id(x.node), x.index), x) for x in vals]


def _keys(v: Any) -> list[Key]:
    return [k for k, _ in _items(v)]


def rebuild(outs: list[Value], boundary: Mapping[Key, Value]) -> list[Value]:
    """``outs`` recomputed with each value in ``boundary`` replaced by its mapped value (the
    walk stops at nodes all of whose outputs are mapped)."""
    env: dict[Key, Value] = dict(boundary)
    order = toposort([v.node for v in outs],
                     keep=lambda x: not all((id(x), i) in boundary
                                            for i in range(len(x.out_types))))
    for n in order:
        if n.op == "input" or all((id(n), i) in env for i in range(len(n.out_types))):
            continue
        ins = tuple(env.get((id(v.node), v.index), v) for v in n.inputs)
        nn = n if ins == n.inputs else n.with_inputs(ins)
        for i in range(len(n.out_types)):
            env.setdefault((id(n), i), Value(nn, i))  # a mapped output keeps its mapping
    return [env.get((id(v.node), v.index), v) for v in outs]


class RecomputeRule(Rule):
    """n(..., saved x, ...) -> n(..., x recomputed from saved ancestors, ...)."""

    name = "recompute"
    kind = "lowering"
    place = "recompute"
    place_title = "backward reads of forward values the plan recomputes"
    pass_name = "remat"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        rec: Recipes | None = ctx.option("recompute")
        if rec is None or n.op == "input":
            return None
        names = [v.node.attrs["name"] for v in n.inputs
                 if v.node.op == "input" and v.node.attrs["name"] in rec.recomputed]
        if not names:
            return None
        try:
            for x in names:
                rec.recompute(x)
        except MatchFail as f:
            return MatchFail(f.reason, n)
        return Match(roots=list(n.outputs), data=(rec, n),
                     detail="recomputes " + ", ".join(sorted(set(names))))

    def build(self, m: Match) -> Sequence[Value]:
        rec, n = m.data
        ins = []
        for v in n.inputs:
            name = v.node.attrs.get("name") if v.node.op == "input" else None
            if name is not None and name in rec.recomputed:
                k = _keys(rec.values[name])[0]
                ins.append(rec.recompute(name)[k])
            else:
                ins.append(m.tr(v))
        nn = n.with_inputs(tuple(ins))
        return list(nn.outputs)


class RematPass(RewritePass):
    """Rewrite an all-saved backward into a plan's backward (option ``recompute``: Recipes)."""

    name = "remat"
    rules = (RecomputeRule(),)

    def run(self, g: Graph) -> PassResult:
        res = super().run(g)
        rec: Recipes = self.options["recompute"]
        ins = [x for x in toposort([v.node for v in res.graph.outputs]) if x.op == "input"]
        bad = [x.attrs["name"] for x in ins if x.attrs["name"] in rec.recomputed]
        if bad:
            raise GraphOptError(f"the backward still reads {sorted(bad)}, which the plan "
                                f"recomputes", where="pass remat")
        out = Graph(ins, res.graph.outputs, res.graph.output_names, g.name, g.meta)
        return PassResult(out, res.changed, res.stats, res.candidates)
