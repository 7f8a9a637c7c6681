"""``--search egraph``: equality saturation of a graph (or of each window of a large one) under
the search's rules, extraction by the cost model, and the cheapest of {input, greedy, ILP,
every merge where it fired} costed as a whole graph.

Rules with an egglog form (``rules.py``) run in egglog; hand-written rules without one (Python
checks) are matched on the input graph here and their rewrites unioned into the e-graph before
saturation (``_seeds``): one step, so they do not apply to what egglog makes."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from ...errors import GraphOptError
from ...ir.graph import Graph
from ...ir.node import Node, Value
from ..result import SearchResult
from .saturate import DEFAULT_NODE_LIMIT, DEFAULT_TIME_LIMIT, Saturated, Stats
from .encode import ctor, multi
from .rules import NO_FORM
from .view import Choice, EGraphView

DEFAULT_MAX_RULES = 400  # generated rule directions per e-graph (egglog holds ~1.4 MB a rule)
DEFAULT_ILP_LIMIT = 10.0  # seconds for the integer program of one e-graph
DEFAULT_ROUNDS = 2  # e-graphs per (window of a) graph, each over the last one's result
EGRAPH_WINDOW = 160  # ops per e-graph for large graphs (as the backtracking search's windows)


def require_egglog() -> None:
    """Raise a clear error when egglog (the optional extra ``egraph``) is missing."""
    try:
        import egglog  # noqa: F401
    except ImportError as ex:
        raise GraphOptError("search mode 'egraph' needs egglog: pip install 'graphopt[egraph]'",
                            where="search") from ex


class _Model:
    """The whole-graph model and the per-node price saturation reads."""

    def __init__(self, cost: Callable[[Graph], float]) -> None:
        self.cost = cost

    def node(self, n: Node) -> float:
        nodes_time = getattr(self.cost, "nodes_time", None)
        if nodes_time is None:  # a plain callable: the node as a one-node graph
            from ...ir.node import input_node

            ins = [input_node(f"_p{i}", v.type) for i, v in enumerate(n.inputs)]
            m = Node.build(n.op, [x.out for x in ins], n.attrs)
            return self.cost(Graph(ins, list(m.outputs)))
        return float(nodes_time([n], n.outputs))

    def pair(self, p: Node, c: Node) -> float:
        """Time of producer ``p`` and consumer ``c`` as one piece (``p`` read only by ``c``);
        a model without ``nodes_time`` prices no pair below its parts."""
        nodes_time = getattr(self.cost, "nodes_time", None)
        if nodes_time is None:
            return self.node(p) + self.node(c)
        return float(nodes_time([p, c], c.outputs))


def _one(g: Graph, rules: Sequence[object], model: _Model, *, node_limit: int,
         time_limit: float, extract: str, max_rules: int, ilp_limit: float, savings: bool,
         refine: bool, deadline: float,
         progress: Callable[[str], None] | None) -> tuple[Graph, dict[str, int], Stats, str]:
    """Saturate and extract one graph: (best graph, rules used, stats, which extraction won:
    "input" | "greedy" | "greedy+savings" | "ilp" | "rewritten", "+refined" when hill
    climbing improved it). Greedy runs on per-node
    costs, and again with the fusion savings when there are any (the savings credit a fused
    pair only when producer and consumer are adjacent e-nodes, which can favour the unmerged
    form: squeezenet tiny h100 saved 42% by plain greedy, 11% by greedy with savings). The ILP
    gets what is left before ``deadline`` (at most ``ilp_limit``), none when that is under
    0.1 s."""
    from .decode import decode, decode_reached, rules_used
    from .encode import encode
    from .rules import translate_rules
    from .saturate import saturate

    enc = encode(g)
    tr = translate_rules(rules, enc.keys, max_rules)
    python = [r for r in rules if tr.skipped.get(getattr(r, "name", "")) == NO_FORM]
    seeds = _seeds(g, python)
    if seeds:
        enc = encode(g, extra=[v for _, _, v in seeds])
        glob = {(id(v.node), v.index): k for k, v in enc.values.items()}
        lines = []
        for (name, root, new), x in zip(seeds, enc.extra):
            r = glob.get((id(root.node), root.index))
            if r is None:  # a root the e-graph does not model (a leaf without a type)
                continue
            made = "Out" if multi(new.node) else ctor(new.node.op, len(new.node.inputs), False)
            lines.append(f'(union {r} {x}) (made {r} "{name}|{made}")')
        enc.term += "\n".join(lines) + "\n"
    sat = saturate(enc, tr, model.node, node_limit=node_limit, time_limit=time_limit,
                   pair_cost=model.pair if savings else None, progress=progress)
    best, best_cost, used, won = g, model.cost(g), {}, "input"
    choices = []
    from .extract import greedy

    plain = EGraphView(sat.view.classes, sat.view.roots)  # per-node costs only
    gch = greedy(plain)
    if extract in ("greedy", "both"):
        choices.append(("greedy", gch))
        if sat.view.savings:
            choices.append(("greedy+savings", greedy(sat.view)))
    if extract in ("ilp", "both"):
        from .ilp import ilp

        left = min(ilp_limit, deadline - time.perf_counter())
        ich = ilp(sat.view, time_limit=left, warm=choices[-1][1] if choices else gch) \
            if left > 0.1 else None
        if ich is not None:
            choices.append(("ilp", ich))
    from .rules import MERGE

    merges = {r.name for r in tr.rules if r.ruleset == MERGE} | {n for n, _, _ in seeds}
    choices.append(("rewritten", _rewritten(sat, gch, merges)))
    best_choice: Choice | None = None
    start = "input"
    for how, ch in choices:
        try:
            cand, reached = decode_reached(ch, sat, enc)
        except GraphOptError:  # the rewritten choice can close a cycle: not a graph
            continue
        c = model.cost(cand)
        if c < best_cost or best_choice is None:
            best_choice, start = reached, how
            if c < best_cost:
                best, best_cost, used, won = cand, c, rules_used(reached, sat), how
    if refine and best_choice is not None:
        ch, g2, c = _refine(best_choice, model.cost(decode(best_choice, sat, enc)), sat, enc,
                            model, deadline)
        if c < best_cost:
            best, best_cost, used, won = g2, c, rules_used(ch, sat), start + "+refined"
    return best, used, sat.stats, won


def _refine(ch: Choice, cost: float, sat: "Saturated", enc: object, model: _Model,
            deadline: float) -> tuple[Choice, Graph, float]:
    """Hill climbing on the whole-graph model: re-choose one reached class at a time (classes
    newly reached take their first e-node), keep the first change that lowers the cost, until
    none does or ``deadline``. The extraction's per-node costs miss the model's fusion (a split
    read through views fuses with its readers); this step sees it."""
    from .decode import decode, decode_reached

    first = {c: 0 for c in sat.view.classes}
    best_g = decode(ch, sat, enc)  # type: ignore[arg-type]
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for cls in sorted(ch):
            if improved:  # ch changed: start a new pass over its classes
                break
            for i in range(len(sat.view.classes[cls])):
                if i == ch[cls] or time.perf_counter() >= deadline:
                    continue
                try:
                    g2, reached = decode_reached({**first, **ch, cls: i}, sat, enc)  # type: ignore
                except GraphOptError:
                    continue
                c = model.cost(g2)
                if c < cost * (1 - 1e-9):
                    ch, cost, best_g, improved = reached, c, g2, True
                    break
    return ch, best_g, cost


def _seeds(g: Graph, rules: Sequence[object]) -> list[tuple[str, Value, Value]]:
    """(rule, root, replacement) of every match in ``g`` of ``rules`` (hand-written rules
    with Python checks and no egglog form): their rewrites of the input graph, unioned into the
    e-graph before saturation (one step: they do not apply to what egglog rules make)."""
    from ...rewrite.index import Matcher
    from ...rewrite.match import MatchFail
    from ...rewrite.rule import PatternRule

    prs = [r for r in rules if isinstance(r, PatternRule)]
    if not prs:
        return []
    matcher = Matcher(prs)
    out: list[tuple[str, Value, Value]] = []
    for r, m in matcher.matches(g):
        vals = matcher.build(r, m)
        if isinstance(vals, MatchFail):
            continue
        for old, new in zip(m.roots, vals):
            if not (old.node is new.node and old.index == new.index):
                out.append((r.name, old, new))
    return out


def _rewritten(sat: "Saturated", base: Choice, rules: set[str]) -> Choice:
    """``base`` with every class one of ``rules`` (the hand-written merges, not the expansive
    kernel enlargement) made a node in
    taking that node (the rules applied wherever they fired, as a rewrite pass would): a
    third candidate, costed by the whole-graph model like the others, for what per-node costs
    miss (fusion through views and splits)."""
    ch = dict(base)
    for cls, made in sat.made.items():
        labels = {c for r, c in made if r in rules}
        nodes = sat.view.classes.get(cls, [])
        pick = [i for i, n in enumerate(nodes) if n.op in labels and (cls, i) not in sat.original]
        if pick:
            ch[cls] = pick[0]
    for cls, nodes in sat.view.classes.items():
        if nodes:
            ch.setdefault(cls, 0)
    return ch


def egraph_search(g: Graph, rules: Sequence[object], cost: Callable[[Graph], float], *,
                  budget: float = 30.0, node_limit: int = DEFAULT_NODE_LIMIT,
                  time_limit: float = DEFAULT_TIME_LIMIT, extract: str = "both",
                  max_rules: int = DEFAULT_MAX_RULES, ilp_limit: float = DEFAULT_ILP_LIMIT,
                  window: int = EGRAPH_WINDOW, savings: bool = True, refine: bool = True,
                  rounds: int = DEFAULT_ROUNDS,
                  progress: Callable[[str], None] | None = None) -> SearchResult:
    """Equality saturation search of ``g`` under ``rules`` (the backtracking search's list).

    ``cost(graph) -> seconds`` (a ``CostModel`` also prices single e-nodes by
    ``nodes_time``). Graphs over ``window`` ops are cut as the backtracking search cuts them
    (``windows.partition``) and each window is one e-graph, windows of equal structure reusing
    the first one's result; ``budget`` seconds in all, shared among the windows left; each
    e-graph's saturation gets at most half its share and ``time_limit``, and ``node_limit``
    e-nodes, the ILP what is left of its share. ``extract``: "greedy", "ilp" or "both".
    ``savings``: price fused (producer, consumer) pairs for the extraction (the model's
    fusion, which per-node costs cannot see). ``refine``: improve the best extraction by hill
    climbing on the whole-graph model until the e-graph's share of the budget is spent.
    ``rounds``: e-graphs in turn, each over the previous one's best graph, while one improves
    (the rules applied in Python match only the graph an e-graph starts from). The
    result's ``explored`` counts e-nodes (summed over windows), ``expanded`` saturation
    iterations; ``stopped`` is the last window's saturation stop reason (or "time" when the
    budget ran out before a window); ``rejected`` counts which extraction won per e-graph
    ("won:input" / "won:greedy" / "won:ilp"), e-nodes left unpriced, and the rule directions
    left out of egglog per reason ("not in egglog: <reason>", the most of any e-graph)."""
    from .. import windows as W

    require_egglog()
    if extract not in ("greedy", "ilp", "both"):
        raise GraphOptError(f"extract must be greedy, ilp or both, got {extract!r}",
                            where="egraph search")
    model = _Model(cost)
    t0 = time.perf_counter()
    c0 = cost(g)
    applied: dict[str, int] = {}
    tally: dict[str, int] = {}
    enodes = iterations = n_windows = reused = 0
    stopped = "saturated"

    def run(h: Graph, share: float) -> Graph:
        """``rounds`` e-graphs in turn, each over the last one's best graph (so rules applied
        in Python see what the previous round made), while a round improves."""
        nonlocal enodes, iterations, stopped, n_windows
        end = time.perf_counter() + share
        for k in range(rounds):
            part = (end - time.perf_counter()) / (rounds - k)
            if part <= 0:
                break
            out, used, st, won = _one(h, rules, model, node_limit=node_limit,
                                      time_limit=min(time_limit, part / 2), extract=extract,
                                      max_rules=max_rules, ilp_limit=ilp_limit,
                                      deadline=time.perf_counter() + part,
                                      savings=savings, refine=refine, progress=progress)
            n_windows += 1
            enodes += st.enodes
            iterations += st.iterations
            stopped = st.stopped
            tally["won:" + won] = tally.get("won:" + won, 0) + 1
            if st.unpriced:
                tally["unpriced-enodes"] = tally.get("unpriced-enodes", 0) + st.unpriced
            for why, n in st.untranslated.items():  # rule directions egglog did not get
                key = "not in egglog: " + why
                tally[key] = max(tally.get(key, 0), n)
            for r, v in used.items():
                applied[r] = applied.get(r, 0) + v
            if out is h:
                break
            h = out
        return h

    if len(W._ops(g)) <= window:
        cur = run(g, budget)
    else:
        parts = W.partition(g, window)
        used_out = W._used_outside(g, parts)
        env: dict[tuple[int, int], Value] = {}
        memo: dict[tuple, tuple[W.Window, Graph, dict[str, int]]] = {}
        for i, part in enumerate(parts):
            w = W.extract(g, part, used_out)
            sig = W._signature(w)
            left = budget - (time.perf_counter() - t0)
            if sig in memo and len(memo[sig][0].consts) == len(w.consts):
                w0, res, used = memo[sig]
                swap = {id(a): b for a, b in zip(w0.consts, w.consts)}
                new_outs = W.splice(res, W._rebased(w0, w), env, swap)
                reused += 1
                for k, v in used.items():
                    applied[k] = applied.get(k, 0) + v
            elif left <= 0:
                stopped = "time"
                new_outs = W.splice(w.graph, w, env)
            else:
                before = dict(applied)
                res = run(w.graph, left / (len(parts) - i))
                new_outs = W.splice(res, w, env)
                if W._reusable(w, res):
                    memo[sig] = (w, res, {k: v - before.get(k, 0) for k, v in applied.items()
                                          if v != before.get(k, 0)})
            for v, nv in zip(w.outs, new_outs):
                env[(id(v.node), v.index)] = nv
            if progress:
                progress(f"e-graph window {i + 1}/{len(parts)}")
        cur = Graph(g.inputs, [env.get((id(v.node), v.index), v) for v in g.outputs],
                    g.output_names, g.name, g.meta)
    final = cost(cur)
    if final > c0:  # windows are costed alone; never return a graph the model says is slower
        cur, final, applied = g, c0, {}
        tally["whole-graph-worse"] = tally.get("whole-graph-worse", 0) + 1
    return SearchResult(cur, final, c0, applied, iterations, enodes, time.perf_counter() - t0,
                        stopped, n_windows, reused, tally)
