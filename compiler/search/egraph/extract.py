"""Extraction from a saturated e-graph (an ``EGraphView``): which e-node each reached e-class
computes, so that the graph they form costs least.

* ``dag_cost(view, choice)``: the cost of the graph a choice picks. Each chosen e-node counts
  once however many parents read its class (DAG cost, not tree cost), less the ``savings`` of
  every chosen (consumer, producer) pair.
* ``greedy(view)``: a bottom-up pass in the order e-classes become computable (a class only takes
  an e-node whose child classes are all computable already, so the answer is acyclic even where
  the e-graph has cycles), scoring an e-node as its cost plus each child class's cost shared
  among that class's readers; then passes of local moves that re-choose one class when the DAG
  cost of the whole choice drops.
* ``prune(view)``: the e-graph without what no optimal answer uses (``pruned`` also returns the
  map back to the input's e-node indices).

The integer form ``Flat`` is shared with the integer program (``ilp.py``).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from ...errors import GraphOptError
from .view import Choice, EGraphView, NodeRef


class ExtractionError(GraphOptError):
    """No graph can be extracted (a root e-class without a computable e-node), or a choice is
    not a graph (a reached class unchosen, a cycle), or the view is inconsistent."""


@dataclass
class Flat:
    """An ``EGraphView`` with integer e-classes and e-nodes. Node ``n`` lies in class
    ``node_class[n]`` at index ``node_pos[n]`` of its list; ``kids[n]``: the distinct classes it
    reads, in order; ``members[c]``: the nodes of class ``c``; ``pairs[n]``: (partner, saving)
    for every savings pair ``n`` is in; ``readers[c]``: the nodes that read class ``c``."""

    class_ids: list[str]
    node_class: list[int]
    node_pos: list[int]
    cost: list[float]
    kids: list[tuple[int, ...]]
    members: list[list[int]]
    roots: list[int]
    pairs: list[list[tuple[int, float]]]
    savings: dict[tuple[int, int], float]
    readers: list[list[int]]

    @property
    def n_nodes(self) -> int:
        return len(self.node_class)

    def ref(self, n: int) -> NodeRef:
        return self.class_ids[self.node_class[n]], self.node_pos[n]

    def to_choice(self, chosen: dict[int, int]) -> Choice:
        """Class -> chosen node (integers) as a ``Choice`` of the view."""
        return {self.class_ids[c]: self.node_pos[n] for c, n in chosen.items()}


def flatten(view: EGraphView) -> Flat:
    """The integer form of ``view``. Raises ``ExtractionError`` for a child, root or savings
    entry that names no e-class / e-node of the view, a saving whose producer is not in a class
    its consumer reads, a cost that is not finite, or a saving that is not finite and >= 0."""
    class_ids = list(view.classes)
    index = {c: i for i, c in enumerate(class_ids)}
    node_class: list[int] = []
    node_pos: list[int] = []
    cost: list[float] = []
    kids: list[tuple[int, ...]] = []
    members: list[list[int]] = []
    for ci, cid in enumerate(class_ids):
        mine = []
        for pos, node in enumerate(view.classes[cid]):
            try:
                ks = tuple(dict.fromkeys(index[k] for k in node.children))
            except KeyError as e:
                raise ExtractionError(f"{node.op} reads e-class {e.args[0]!r}, which the view does "
                                      f"not have", where=f"e-node {pos} of e-class {cid}") from None
            if not math.isfinite(node.cost):
                raise ExtractionError(f"{node.op} has cost {node.cost}; leave e-nodes that cannot be "
                                      f"priced out of the view", where=f"e-node {pos} of e-class {cid}")
            mine.append(len(node_class))
            node_class.append(ci)
            node_pos.append(pos)
            cost.append(float(node.cost))
            kids.append(ks)
        members.append(mine)
    roots = []
    for r in view.roots:
        if r not in index:
            raise ExtractionError(f"root e-class {r!r} is not in the view", where="e-graph roots")
        if index[r] not in roots:
            roots.append(index[r])
    savings: dict[tuple[int, int], float] = {}
    for (a, b), s in view.savings.items():
        na, nb = _node_of(view, index, members, a), _node_of(view, index, members, b)
        if node_class[nb] not in kids[na]:
            raise ExtractionError(f"saving {s} pairs it with e-node {b[1]} of e-class {b[0]}, "
                                  f"which it does not read", where=f"e-node {a[1]} of e-class {a[0]}")
        if not (math.isfinite(s) and s >= 0):
            raise ExtractionError(f"saving {s} with e-node {b[1]} of e-class {b[0]}: a saving is a "
                                  f"finite number of seconds >= 0", where=f"e-node {a[1]} of e-class {a[0]}")
        if s == 0:
            continue
        savings[na, nb] = savings.get((na, nb), 0.0) + float(s)
    pairs, readers = _links(len(node_class), len(class_ids), kids, savings)
    return Flat(class_ids, node_class, node_pos, cost, kids, members, roots, pairs, savings, readers)


def _links(n_nodes: int, n_classes: int, kids: list[tuple[int, ...]], savings: dict[tuple[int, int], float]
           ) -> tuple[list[list[tuple[int, float]]], list[list[int]]]:
    """``Flat.pairs`` and ``Flat.readers`` from the children and the savings."""
    readers: list[list[int]] = [[] for _ in range(n_classes)]
    for n, ks in enumerate(kids):
        for k in ks:
            readers[k].append(n)
    pairs: list[list[tuple[int, float]]] = [[] for _ in range(n_nodes)]
    for (na, nb), s in savings.items():
        pairs[na].append((nb, s))
        pairs[nb].append((na, s))
    return pairs, readers


def _node_of(view: EGraphView, index: dict[str, int], members: list[list[int]], ref: NodeRef) -> int:
    cid, pos = ref
    if cid not in index or not 0 <= pos < len(view.classes[cid]):
        raise ExtractionError(f"a saving names e-node {pos} of e-class {cid!r}, which the view "
                              f"does not have", where="e-graph savings")
    return members[index[cid]][pos]


def reached(flat: Flat, chosen: dict[int, int]) -> list[int]:
    """The classes reached from the roots through ``chosen``, children before parents. Raises
    ``ExtractionError`` when a reached class is unchosen or the chosen nodes form a cycle."""
    state: dict[int, int] = {}  # 1 on the stack, 2 done
    out: list[int] = []
    for r in flat.roots:
        if r in state:
            continue
        stack: list[tuple[int, int]] = [(r, 0)]
        state[r] = 1
        while stack:
            c, i = stack[-1]
            if c not in chosen:
                via = f" (read by e-class {flat.class_ids[stack[-2][0]]})" if len(stack) > 1 else ""
                raise ExtractionError(f"e-class {flat.class_ids[c]} is reached{via} but the choice "
                                      f"has no e-node for it", where=f"e-class {flat.class_ids[c]}")
            ks = flat.kids[chosen[c]]
            if i == len(ks):
                stack.pop()
                state[c] = 2
                out.append(c)
                continue
            stack[-1] = (c, i + 1)
            k = ks[i]
            s = state.get(k)
            if s == 1:
                cyc = [flat.class_ids[x] for x, _ in stack[[x for x, _ in stack].index(k):]]
                raise ExtractionError(f"the choice forms a cycle: {' -> '.join(cyc + [cyc[0]])}",
                                      where=f"e-class {flat.class_ids[k]}")
            if s is None:
                state[k] = 1
                stack.append((k, 0))
    return out


def flat_cost(flat: Flat, chosen: dict[int, int], classes: list[int]) -> float:
    """Cost of the chosen nodes of ``classes`` (each once), less the savings of pairs among them."""
    picked = {chosen[c] for c in classes}
    total = sum(flat.cost[n] for n in picked)
    for (a, b), s in flat.savings.items():
        if a in picked and b in picked:
            total -= s
    return total


def flat_choice(flat: Flat, choice: Choice) -> dict[int, int]:
    index = {c: i for i, c in enumerate(flat.class_ids)}
    chosen = {}
    for cid, pos in choice.items():
        if cid not in index:
            raise ExtractionError(f"the choice names e-class {cid!r}, which the view does not have",
                                  where=f"e-class {cid}")
        ms = flat.members[index[cid]]
        if not 0 <= pos < len(ms):
            raise ExtractionError(f"the choice picks e-node {pos}, but the class has {len(ms)}",
                                  where=f"e-class {cid}")
        chosen[index[cid]] = ms[pos]
    return chosen


def dag_cost(view: EGraphView, choice: Choice) -> float:
    """The cost of the graph ``choice`` picks: every e-node chosen for a class reached from the
    roots counted once, less the savings of chosen (consumer, producer) pairs. Raises
    ``ExtractionError`` when a reached class is unchosen or the choice forms a cycle."""
    flat = flatten(view)
    chosen = flat_choice(flat, choice)
    return flat_cost(flat, chosen, reached(flat, chosen))


def bottom_up(flat: Flat, alive: list[bool] | None = None, shared: bool = True
              ) -> tuple[dict[int, int], list[int]]:
    """The first pass of ``greedy``: e-classes are settled cheapest first, each with an e-node
    whose child classes are all settled. An e-node's score is its cost, less its savings with
    the nodes settled for its children, plus each child class's score, divided (``shared``) by
    the number of classes that read it (a shared input paid once, not once per reader) or not
    (the tree cost). Returns the chosen node per settled class and the settling order (children
    before parents); classes never settled have no computable node (every e-node reads,
    possibly through others, an unsettled class). ``alive``: nodes to consider (all when None)."""
    n_cls = len(flat.members)
    if shared:
        fan = [max(1, len({flat.node_class[n] for n in flat.readers[c]})) for c in range(n_cls)]
    else:
        fan = [1] * n_cls
    pending = [len(k) for k in flat.kids]
    score = [0.0] * n_cls
    chosen: dict[int, int] = {}
    order: list[int] = []

    def value(n: int) -> float:
        v = flat.cost[n]
        for k in flat.kids[n]:
            v += score[k] / fan[k]
        for m, s in flat.pairs[n]:
            if chosen.get(flat.node_class[m]) == m and flat.node_class[m] in flat.kids[n]:
                v -= s
        return v

    heap = [(value(n), n) for n in range(flat.n_nodes) if pending[n] == 0 and (alive is None or alive[n])]
    heapq.heapify(heap)
    while heap:
        v, n = heapq.heappop(heap)
        c = flat.node_class[n]
        if c in chosen:
            continue
        chosen[c] = n
        score[c] = v
        order.append(c)
        for p in flat.readers[c]:
            pending[p] -= 1
            if pending[p] == 0 and (alive is None or alive[p]) and flat.node_class[p] not in chosen:
                heapq.heappush(heap, (value(p), p))
    return chosen, order


def by_level(flat: Flat, chosen: dict[int, int], order: list[int]) -> list[int]:
    """``order`` (children before parents in ``chosen``) re-sorted by level, the longest chosen
    path down to an input: still topological, and a class sits as low as it can, so a local
    move rarely has to reorder a long stretch of the graph."""
    level: dict[int, int] = {}
    for c in order:
        level[c] = 1 + max((level[k] for k in flat.kids[chosen[c]]), default=0)
    return sorted(order, key=level.__getitem__)


def _unresolved_error(flat: Flat, root: int, settled: dict[int, int]) -> ExtractionError:
    cid = flat.class_ids[root]
    why = []
    for n in flat.members[root][:4]:
        missing = [flat.class_ids[k] for k in flat.kids[n] if k not in settled]
        why.append(f"e-node {flat.node_pos[n]} reads {', '.join(missing)}")
    detail = "; ".join(why) if why else "the class has no e-nodes"
    return ExtractionError(f"root e-class has no e-node that can be computed without a cycle or "
                           f"an uncomputable class ({detail})", where=f"e-class {cid}")


class _Local:
    """The local moves of ``greedy``. It keeps a choice for every settled class (acyclic as a
    whole, with ``order`` a topological order of it: children lower), which classes the roots
    reach (``refs``: chosen reached readers, plus one for a root) and the DAG cost of the reached
    part. ``move`` re-chooses one class, updating the reached set by reference counts, so the
    change in cost is exact (shared children counted once) and costs as much as the part of the
    graph that changes."""

    def __init__(self, flat: Flat, chosen: dict[int, int], order: list[int]) -> None:
        self.f = flat
        self.chosen = chosen
        self.order = {c: i for i, c in enumerate(order)}
        self.users: dict[int, set[int]] = {c: set() for c in chosen}
        for c, n in chosen.items():
            for k in flat.kids[n]:
                self.users[k].add(c)
        self.refs: dict[int, int] = {c: 0 for c in chosen}
        self.total = 0.0
        for r in flat.roots:
            self._inc(r)
        self.tol = 1e-12 * max([abs(x) for x in flat.cost] + [1e-30])

    def _active(self, n: int) -> bool:
        c = self.f.node_class[n]
        return self.chosen.get(c) == n and self.refs.get(c, 0) > 0

    def _node_delta(self, n: int, sign: float) -> None:
        """Count (sign 1) or uncount (sign -1) node n: its cost and its pairs with active nodes."""
        d = self.f.cost[n]
        for m, s in self.f.pairs[n]:
            if self._active(m) and m != n:
                d -= s
        self.total += sign * d

    def _inc(self, c: int) -> None:
        stack = [c]
        while stack:
            c = stack.pop()
            self.refs[c] += 1
            if self.refs[c] == 1:
                n = self.chosen[c]
                self._node_delta(n, 1.0)
                stack.extend(self.f.kids[n])

    def _dec(self, c: int) -> None:
        stack = [c]
        while stack:
            c = stack.pop()
            self.refs[c] -= 1
            if self.refs[c] == 0:
                n = self.chosen[c]
                self._node_delta(n, -1.0)
                stack.extend(self.f.kids[n])

    def creates_cycle(self, c: int, n: int) -> bool:
        """Whether choosing node n for class c closes a cycle (a child of n reaches c)."""
        oc = self.order[c]
        stack = [k for k in self.f.kids[n] if self.order[k] > oc]
        seen: set[int] = set()
        while stack:
            k = stack.pop()
            if k == c:
                return True
            if k in seen:
                continue
            seen.add(k)
            stack.extend(j for j in self.f.kids[self.chosen[k]] if self.order[j] >= oc)
        return False

    def move(self, c: int, n: int) -> float:
        """Choose n for class c (reached, n acyclic there); the change in the reached cost."""
        before = self.total
        old = self.chosen[c]
        self._node_delta(old, -1.0)
        self.chosen[c] = n
        self._node_delta(n, 1.0)
        for k in self.f.kids[n]:
            self._inc(k)
            self.users[k].add(c)
        for k in self.f.kids[old]:
            self._dec(k)
            self.users[k].discard(c)
        return self.total - before

    def reorder(self, c: int) -> None:
        """Restore the topological order after class c took a node reading higher classes
        (Pearce and Kelly's dynamic topological order: the part below moves down, c and the
        part above it within the window move up)."""
        oc = self.order[c]
        heads = [k for k in self.f.kids[self.chosen[c]] if self.order[k] > oc]
        if not heads:
            return
        ub = max(self.order[k] for k in heads)
        down: set[int] = set()
        stack = list(heads)
        while stack:
            k = stack.pop()
            if k in down:
                continue
            down.add(k)
            stack.extend(j for j in self.f.kids[self.chosen[k]] if self.order[j] > oc)
        up: set[int] = set()
        stack = [c]
        while stack:
            k = stack.pop()
            if k in up:
                continue
            up.add(k)
            stack.extend(u for u in self.users[k] if self.order[u] < ub)
        slots = sorted(self.order[k] for k in down | up)
        moved = sorted(down, key=self.order.__getitem__) + sorted(up, key=self.order.__getitem__)
        for k, slot in zip(moved, slots):
            self.order[k] = slot

    def can_take(self, c: int, n: int) -> bool:
        """Whether reached class c may take node n: another node, all its children settled,
        no cycle."""
        return (self.refs[c] > 0 and self.chosen[c] != n and c not in self.f.kids[n]
                and all(k in self.chosen for k in self.f.kids[n]) and not self.creates_cycle(c, n))

    def hopeless(self, c: int, n: int) -> bool:
        """Whether moving class c to node n surely does not lower the cost, seen without trying:
        n costs no less, neither has savings, and no class would be left unreached."""
        f = self.f
        old = self.chosen[c]
        if f.pairs[n] or f.pairs[old] or f.cost[n] < f.cost[old]:
            return False
        kn = f.kids[n]
        return all(self.refs[k] >= 2 or k in kn for k in f.kids[old])

    def single_moves(self) -> bool:
        """One sweep over the reached classes (children first), keeping every single-class move
        that lowers the DAG cost. Whether any was kept."""
        changed = False
        for c in sorted((c for c, r in self.refs.items() if r > 0), key=self.order.__getitem__):
            if len(self.f.members[c]) < 2:
                continue
            for n in self.f.members[c]:
                if self.chosen[c] == n or self.hopeless(c, n) or not self.can_take(c, n):
                    continue
                cur = self.chosen[c]
                if self.move(c, n) < -self.tol:
                    self.reorder(c)
                    changed = True
                else:
                    self.move(c, cur)
        return changed

    def shared_moves(self) -> bool:
        """For each class k read by e-nodes of several reached classes: move all those classes
        at once to their cheapest e-node reading k, kept when the DAG cost drops (a merged node
        pays off only when all its slices use it, which no single move sees)."""
        f = self.f
        changed = False
        for k in sorted(self.chosen, key=self.order.__getitem__):
            best: dict[int, int] = {}
            for p in f.readers[k]:
                c = f.node_class[p]
                if self.refs.get(c, 0) > 0 and k not in f.kids[self.chosen[c]]:
                    if c not in best or f.cost[p] < f.cost[best[c]]:
                        best[c] = p
            if len(best) < 2:
                continue
            done: list[tuple[int, int]] = []
            delta = 0.0
            for c, p in best.items():
                if self.can_take(c, p):
                    done.append((c, self.chosen[c]))
                    delta += self.move(c, p)
                    self.reorder(c)
            if delta < -self.tol:
                changed = True
                continue
            for c, old in reversed(done):
                self.move(c, old)
                self.reorder(c)
        return changed

    def improve(self, passes: int) -> None:
        """Up to ``passes`` rounds of ``single_moves`` and ``shared_moves``; stops after a round
        that changes nothing."""
        for _ in range(passes):
            changed = self.single_moves()
            if not self.shared_moves() and not changed:
                return

    def choice(self) -> dict[int, int]:
        return {c: n for c, n in self.chosen.items() if self.refs[c] > 0}


def greedy(view: EGraphView, *, passes: int = 4) -> Choice:
    """A cheap acyclic choice for every class the roots reach: ``bottom_up`` (the cheaper of its
    shared and tree scores, by DAG cost), then up to ``passes`` rounds of local moves that lower
    the DAG cost (``_Local.improve``). Raises ``ExtractionError`` when a root class has no
    computable e-node."""
    flat = flatten(view)
    starts = [bottom_up(flat, shared=True), bottom_up(flat, shared=False)]
    chosen, order = starts[0]
    for r in flat.roots:
        if r not in chosen:
            raise _unresolved_error(flat, r, chosen)
    chosen, order = min(starts, key=lambda s: flat_cost(flat, s[0], reached(flat, s[0])))
    local = _Local(flat, chosen, by_level(flat, chosen, order))
    local.improve(passes)
    return flat.to_choice(local.choice())


def prune_flat(flat: Flat) -> tuple[Flat, list[int]]:
    """``prune`` on the integer form: the smaller ``Flat`` and, per e-node of it, the e-node of
    ``flat`` it is."""
    alive = [flat.node_class[n] not in flat.kids[n] for n in range(flat.n_nodes)]
    settled, _ = bottom_up(flat, alive)
    for r in flat.roots:
        if r not in settled:
            raise _unresolved_error(flat, r, settled)
    for n in range(flat.n_nodes):
        alive[n] = alive[n] and all(k in settled for k in flat.kids[n])
    if _dominance_sound(flat):
        for ms in flat.members:
            _drop_dominated(flat, [n for n in ms if alive[n]], alive)
    seen = set(flat.roots)
    stack = list(flat.roots)
    while stack:
        c = stack.pop()
        for n in flat.members[c]:
            if alive[n]:
                for k in flat.kids[n]:
                    if k not in seen:
                        seen.add(k)
                        stack.append(k)
    classes = [c for c in range(len(flat.members)) if c in seen]
    new_c = {c: i for i, c in enumerate(classes)}
    origin: list[int] = []
    new_n: dict[int, int] = {}
    node_class: list[int] = []
    node_pos: list[int] = []
    members: list[list[int]] = []
    for c in classes:
        ms = []
        for n in flat.members[c]:
            if alive[n]:
                new_n[n] = len(origin)
                node_class.append(new_c[c])
                node_pos.append(len(ms))
                ms.append(len(origin))
                origin.append(n)
        members.append(ms)
    kids = [tuple(new_c[k] for k in flat.kids[n]) for n in origin]
    savings = {(new_n[a], new_n[b]): s for (a, b), s in flat.savings.items() if a in new_n and b in new_n}
    pairs, readers = _links(len(origin), len(classes), kids, savings)
    sub = Flat([flat.class_ids[c] for c in classes], node_class, node_pos, [flat.cost[n] for n in origin],
               kids, members, [new_c[r] for r in flat.roots], pairs, savings, readers)
    return sub, origin


def pruned(view: EGraphView) -> tuple[EGraphView, dict[str, list[int]]]:
    """``prune``'s view and, per kept class, the input's index of each kept e-node."""
    flat = flatten(view)
    sub, origin = prune_flat(flat)
    keep = {cid: [flat.node_pos[origin[n]] for n in sub.members[c]] for c, cid in enumerate(sub.class_ids)}
    classes = {cid: [view.classes[cid][p] for p in ps] for cid, ps in keep.items()}
    savings = {(sub.ref(a), sub.ref(b)): s for (a, b), s in sub.savings.items()}
    return EGraphView(classes, list(view.roots), savings), keep


def _dominance_sound(flat: Flat) -> bool:
    """Dropping a dominated node can leave parts of the graph unreached, losing their savings;
    that never raises the cost when no node's savings exceed its own cost."""
    return all(sum(s for _, s in flat.pairs[n]) <= flat.cost[n] for n in range(flat.n_nodes))


def _drop_dominated(flat: Flat, nodes: list[int], alive: list[bool]) -> None:
    """Within one class, drop node b when another node a costs no more and reads a subset of
    b's classes (any choice with b stays a graph, no dearer, with a in its place) and b has no
    savings (a's can only help). Of equal nodes the first is kept."""
    if len(nodes) < 2:
        return
    for b in nodes:
        if flat.pairs[b]:
            continue
        kb = set(flat.kids[b])
        for a in nodes:
            if a == b or not alive[a] or flat.cost[a] > flat.cost[b] or not kb.issuperset(flat.kids[a]):
                continue
            if flat.cost[a] < flat.cost[b] or len(flat.kids[a]) < len(kb) or a < b:
                alive[b] = False
                break


def prune(view: EGraphView) -> EGraphView:
    """``view`` without what no optimal choice uses: classes the roots cannot reach, e-nodes
    that read their own class or a class with no computable e-node, and e-nodes dominated by
    another of their class (no dearer, reading a subset of the classes; applied only when no
    e-node's savings exceed its cost, and never to an e-node that has savings). Raises
    ``ExtractionError`` when a root class has no computable e-node. E-node indices change;
    ``pruned`` also returns the map back."""
    return pruned(view)[0]
