"""A placement plan (which forward values are saved, which are recomputed in the backward), the
forward / backward FX modules it makes, and its peak memory over their fixed schedule.

``complete(joint, saved, solver)`` closes a saved set into a plan: every value the backward reads
that is not saved is recomputed, and so are the unsaved forward values those recomputations read,
down to saved values and primals. A random op (dropout) is never recomputed and a tuple-valued
call cannot be saved: a saved set that would need either raises ``GraphOptError`` naming it.

``partition(joint, plan)`` hands the saved set to AOTAutograd's own extraction
(``torch._functorch.partitioners._extract_fwd_bwd_modules``, the code its default and min-cut
partitioners end with): the forward graph computes the forward outputs and the saved values, the
backward graph reads the saved values and tangents and recomputes, from them, what it needs.
The backward is then reordered so a recomputation runs just before its first use
(``reordering_to_mimic_autograd_engine``), as torch does after its min-cut partitioner.

``simulate(joint, plan)`` walks the two graphs in their order (``schedule``: computed on names,
equal to the partitioned graphs' order) with each storage's bytes (a view shares its base's)
and gives the peak of live forward values (activations: saved, transient and
recomputed), the peak of everything the step allocates (activations plus gradients) and the
bytes saved across the forward/backward boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import GraphOptError
from .joint import JointGraph, ancestors


@dataclass(frozen=True)
class Plan:
    """Saved and recomputed forward values (FX node names) and the solver that chose them."""

    saved: frozenset[str]
    recomputed: frozenset[str]
    solver: str

    def recompute_time(self, joint: JointGraph) -> float:
        """Predicted seconds the backward spends recomputing (IR cost model)."""
        return sum(joint.cost[n] for n in self.recomputed)

    def saved_bytes(self, joint: JointGraph) -> int:
        return joint.saved_bytes(self.saved)


def complete(joint: JointGraph, saved: Iterable[str], solver: str) -> Plan:
    """The plan saving exactly ``saved`` (the values the backward reads among them and what
    their recomputation needs); everything else the backward needs is recomputed."""
    saved = {s for s in saved if s not in joint.primal_set}
    for s in saved:
        if not joint.saveable(s):
            raise GraphOptError(f"{s} is not one tensor and cannot be saved",
                                where=f"remat plan ({solver}), fx node {s}")
    recomputed: set[str] = set()
    stack = [n for n in joint.needed if n not in saved]
    while stack:
        v = stack.pop()
        if v in recomputed or v in saved:
            continue
        if not joint.recomputable(v):
            raise GraphOptError(f"the backward needs {v} ({_target(joint, v)}), a random op "
                                f"that is never recomputed, and the plan does not save it",
                                where=f"remat plan ({solver}), fx node {v}")
        recomputed.add(v)
        stack.extend(u for u in joint.inputs[v] if u not in saved and u not in recomputed)
    used = _read_saved(joint, saved, recomputed)
    return Plan(frozenset(used), frozenset(recomputed), solver)


def _read_saved(joint: JointGraph, saved: set[str], recomputed: set[str]) -> set[str]:
    """The saved values something reads (the backward directly, or a recomputation)."""
    read = {n for n in joint.needed if n in saved}
    for r in recomputed:
        read.update(u for u in joint.inputs[r] if u in saved)
    return read


def _target(joint: JointGraph, name: str) -> str:
    return str(joint.nodes[name].target)


def check_plan(joint: JointGraph, plan: Plan) -> None:
    """Raise ``GraphOptError`` unless ``plan`` is executable: every needed value saved or
    recomputed, every recomputation's inputs available, no random op recomputed."""
    avail = plan.saved | plan.recomputed | joint.primal_set
    for n in joint.needed:
        if n not in avail:
            raise GraphOptError(f"backward needs {n}, which is neither saved nor recomputed",
                                where=f"remat plan ({plan.solver}), fx node {n}")
    for r in plan.recomputed:
        if not joint.recomputable(r):
            raise GraphOptError(f"{r} ({_target(joint, r)}) is random and may not be recomputed",
                                where=f"remat plan ({plan.solver}), fx node {r}")
        for u in joint.inputs[r]:
            if u not in avail:
                raise GraphOptError(f"recomputing {r} needs {u}, which is neither saved nor "
                                    f"recomputed", where=f"remat plan ({plan.solver}), fx node {r}")


def partition(joint: JointGraph, plan: Plan) -> tuple[Any, Any]:
    """(forward, backward) FX graph modules running ``plan`` (see the module docstring)."""
    from torch._functorch.partitioners import (_extract_fwd_bwd_modules, is_not_collective,
                                               reordering_to_mimic_autograd_engine)

    check_plan(joint, plan)
    readers = set(joint.backward) | plan.recomputed
    primals = [p for p in joint.primals
               if any(u.name in readers for u in joint.nodes[p].users)]
    saved = [joint.nodes[n] for n in joint.forward if n in plan.saved]
    fw, bw = _extract_fwd_bwd_modules(joint.module, [joint.nodes[p] for p in primals] + saved,
                                      saved_sym_nodes=[],
                                      num_fwd_outputs=joint.num_fwd_outputs)
    fw.graph.eliminate_dead_code(is_impure_node=is_not_collective)
    bw.graph.eliminate_dead_code(is_impure_node=is_not_collective)
    fw.recompile()
    bw.recompile()
    bw = reordering_to_mimic_autograd_engine(bw)
    for n in bw.graph.nodes:
        if n.op == "call_function" and n.name in joint.rng:
            raise GraphOptError(f"the backward of plan {plan.solver} would rerun random op "
                                f"{n.target}", where=f"remat partition, fx node {n.name}")
    return fw, bw


@dataclass(frozen=True)
class Peak:
    """Predicted memory of one training step under a plan, in bytes."""

    activations: int  # peak of live forward values (saved, transient, recomputed)
    total: int  # peak of everything allocated in the step (activations + backward values)
    saved: int  # bytes kept from the forward to the backward


def schedule(joint: JointGraph, plan: Plan) -> tuple[list[str], list[str]]:
    """The call order of ``partition(joint, plan)``'s forward and backward graphs, computed on
    names (no graph is built; tests/remat check it equals the partitioned graphs' order): the
    forward runs, in joint order, what the forward outputs and the saved values need; the
    backward runs each gradient computation in joint order from the first reader of a tangent,
    each preceded by the recomputations and tangent-free backward values it needs that have not
    run yet, in joint order (``reordering_to_mimic_autograd_engine``)."""
    nodes = joint.nodes
    pos = {name: i for i, name in enumerate(nodes)}
    need = ancestors([nodes[o] for o in joint.outputs] + [nodes[s] for s in plan.saved])
    fw = [f for f in joint.forward if f in need]
    out_node = next(n for n in joint.module.graph.nodes if n.op == "output")
    grads = [a for a in out_node.args[0][joint.num_fwd_outputs:] if a is not None]
    wanted = ancestors(grads)
    bwd = [b for b in joint.backward if b in wanted]
    tangent_users = [u.name for t in joint.tangents for u in nodes[t].users if u.name in wanted]
    first = min((pos[u] for u in tangent_users), default=len(pos))
    avail = set(plan.saved) | set(joint.primals) | set(joint.tangents)
    done: set[str] = set()
    bw: list[str] = []
    for b in bwd:
        if pos[b] < first or b in done:
            continue
        stack, ins = [b], set()
        while stack:
            x = stack.pop()
            if x in done or x in ins or x in avail:
                continue
            ins.add(x)
            stack.extend(a.name for a in nodes[x].all_input_nodes)
        for x in sorted(ins, key=pos.__getitem__):
            bw.append(x)
            done.add(x)
    return fw, bw


def simulate(joint: JointGraph, plan: Plan) -> Peak:
    """The peaks of the plan's forward then backward (``schedule``), each value freed after its
    last use (``Peak``)."""
    fw, bw = schedule(joint, plan)
    fwd_names = set(joint.forward)
    live: dict[str, int] = {}  # storage root -> bytes
    act_peak = total_peak = 0

    def run(order: list[str], keep: set[str]) -> None:
        nonlocal act_peak, total_peak
        last: dict[str, int] = {}
        for i, name in enumerate(order):
            for a in joint.nodes[name].all_input_nodes:
                last[_root(joint, a.name)] = i
        for i, name in enumerate(order):
            if name in joint.nbytes:
                r = _root(joint, name)
                if r == name and r not in joint.primal_set:
                    live[r] = joint.nbytes[r]
            act = sum(b for r, b in live.items() if r in fwd_names)
            act_peak = max(act_peak, act)
            total_peak = max(total_peak, sum(live.values()))
            for r in [r for r in live if last.get(r, -1) <= i and r not in keep]:
                del live[r]

    saved_roots = {_root(joint, s) for s in plan.saved}
    run(fw, saved_roots | {_root(joint, o) for o in joint.outputs})
    boundary = sum(b for r, b in live.items() if r in saved_roots)
    for r in list(live):
        if r not in saved_roots:
            del live[r]  # forward outputs the user holds: not the step's activations
    out_node = next(n for n in joint.module.graph.nodes if n.op == "output")
    grads = {_root(joint, a.name) for a in out_node.args[0][joint.num_fwd_outputs:]
             if a is not None}
    run(bw, grads)
    return Peak(act_peak, total_peak, boundary)


def _root(joint: JointGraph, name: str) -> str:
    if name not in joint.storage:
        if name in joint.nodes:
            return name
        raise GraphOptError(f"partitioned graph node {name} is not in the joint graph",
                            where="remat simulate")
    return joint.storage[name]
