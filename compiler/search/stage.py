"""The search step of ``optimize()``: cost model for the target, rules, search, then constant
folding of what the rewrites left over constants (concatenated weights), and the step's report."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..cost.model import SEARCH_FOLD
from ..errors import GraphOptError
from ..ir.graph import Graph
from ..rewrite.driver import local
from ..rewrite.fold import FoldRule
from ..rewrite.rule import PatternRule
from . import MODES
from .backtrack import DEFAULT_ALPHA
from .budget import Budget
from .result import SearchResult
from .windows import DEFAULT_WINDOW, search

DEFAULT_BUDGET_S = 10.0
DEFAULT_MAX_GRAPHS = 1000
DEFAULT_PATIENCE = 10  # expansions without a better graph before a window's search stops


def make_budget(budget: "float | Budget | None") -> Budget:
    """seconds (float) -> a deterministic Budget worth that many seconds of search
    (``Budget.of_seconds``: counted in candidate graphs, the wall clock only a safety stop) with
    the default graph count and patience."""
    if isinstance(budget, Budget):
        return budget
    if budget is None:
        budget = DEFAULT_BUDGET_S
    if budget < 0:
        raise GraphOptError(f"search budget must be >= 0 seconds, got {budget}", where="budget")
    return Budget.of_seconds(float(budget), max_graphs=DEFAULT_MAX_GRAPHS,
                             patience=DEFAULT_PATIENCE)


def search_step(g: Graph, target: str = "cpu", *, budget: "float | Budget | None" = None,
                rules: Sequence[PatternRule] | None = None,
                extra_rules: Sequence[PatternRule] = (),
                cost: str = "analytic", alpha: float = DEFAULT_ALPHA,
                window: int = DEFAULT_WINDOW,
                progress: Callable[[str], None] | None = None,
                mode: str = "backtrack", egraph: dict[str, Any] | None = None
                ) -> tuple[Graph, dict[str, Any]]:
    """Search ``g`` for the cheapest equivalent graph on ``target``.

    rules: the rule set (default: the generated rules both ways; the pipeline passes the
    search's full set, ``graphopt.pipeline.search_rules``); extra_rules are added to it.
    cost: "analytic" or "measured". mode: "backtrack" (TASO's search) or "egraph" (equality
    saturation on egglog, ``search/egraph``; needs the extra ``egraph``); egraph: keyword
    settings of ``egraph_search`` (node_limit, time_limit, extract, max_rules, ilp_limit). Returns the new graph and the report entry (rules applied
    with counts, estimated cost before/after, search time, graphs explored)."""
    from ..cost.measured import cost_model
    from .ruleset import default_rules, graph_ops
    from .why import why_not

    model = cost_model(target, cost)
    rule_list = list(default_rules(ops=graph_ops(g)) if rules is None else rules) + \
        list(extra_rules)
    b = make_budget(budget)
    budget_s = b.seconds if isinstance(budget, Budget) else float(
        DEFAULT_BUDGET_S if budget is None else budget)
    if mode == "egraph":
        from .egraph.search import egraph_search

        res: SearchResult = egraph_search(g, rule_list, model, budget=budget_s,
                                          progress=progress, **(egraph or {}))
    elif mode == "backtrack":
        res = search(g, rule_list, model, alpha=alpha, budget=b, window=window,
                     progress=progress)
    else:
        raise GraphOptError(f"search mode must be one of {', '.join(MODES)}, got {mode!r}",
                            where="search")
    out = res.graph
    folded = 0
    if res.applied:
        out, folded = _fold(out)
    after = model.graph_cost(out)
    before = model.graph_cost(g)
    rep = res.to_dict()
    rep.update({
        "target": model.device.name,
        "cost_model": model.name,
        "rules": len(rule_list),
        "alpha": alpha,
        "budget_s": budget_s,
        "max_explored": b.max_explored,
        "time_limit_s": b.seconds,
        "cost_before_us": round(before.time * 1e6, 3),
        "cost_after_us": round(after.time * 1e6, 3),
        "estimated_speedup": round(1 - after.time / before.time, 4) if before.time else 0.0,
        "kernels_before": before.launches,
        "kernels_after": after.launches,
        "folded_after_search": folded,
        # the rules that did not pay, and why (search/why.py)
        "why_not": why_not(res, rule_list, g),
        "search_mode": mode,
    })
    if mode == "egraph":  # explored / expanded count e-nodes / saturation iterations
        rep["saturation"] = {"enodes": res.explored, "iterations": res.expanded,
                             "stopped": res.stopped, "egraphs": res.windows,
                             "reused": res.reused_windows}
    return out, rep


def _fold(g: Graph) -> tuple[Graph, int]:
    """Constant-fold what the rewrites built over constants (e.g. concatenated weights) with the
    engine's folding rule, under the cleanup pass's size policy (``SEARCH_FOLD``: the one the
    cost model counts as free)."""
    out = local(g, [FoldRule(SEARCH_FOLD)])
    return out.graph, out.applied.get(FoldRule.name, 0)


def format_search(rep: dict[str, Any]) -> str:
    """One paragraph for the text report: the estimate, the search's work, the rules applied and
    (short) the rules refused or not cheaper (``rep["why_not"]`` holds them all)."""
    from .why import format_why_not

    rules = ", ".join(f"{k} x{v}" for k, v in rep.get("rules_applied", {}).items()) or "none"
    text = (f"search ({rep['cost_model']} cost, {rep['target']}): estimated "
            f"{rep['cost_before_us']:.1f} -> {rep['cost_after_us']:.1f} us "
            f"({100 * rep['estimated_speedup']:.1f}% less), {rep['kernels_before']} -> "
            f"{rep['kernels_after']} kernels; {_work_text(rep)} in {rep['seconds']:.2f} s "
            f"(stopped: {_stop_text(rep)}); rules applied: {rules}")
    why = format_why_not(rep["why_not"]) if rep.get("why_not") else ""
    text = f"{text}; {why}" if why else text
    if rep.get("left_out"):
        reasons = sorted(set(rep["left_out"].values()))
        text += (f"; {len(rep['left_out'])} hand-written rules left out for {rep['target']}: "
                 + "; ".join(reasons))
    return text


def _work_text(rep: dict[str, Any]) -> str:
    """What the search did: graphs for backtracking, e-nodes and saturation iterations for the
    e-graph mode."""
    sat = rep.get("saturation")
    if rep.get("search_mode") == "egraph" and sat:
        from .egraph.rules import NO_FORM

        left = sum(n for k, n in rep.get("rejected", {}).items()
                   if k.startswith("not in egglog: ") and k != "not in egglog: " + NO_FORM)
        return (f"equality saturation: {sat['enodes']} e-nodes in {sat['iterations']} "
                f"iterations over {sat['egraphs']} e-graphs"
                + (f" ({left} rule directions left out of egglog, reasons in the report's "
                   f"'rejected'; hand-written rules without an egglog form run in Python)"
                   if left else ""))
    return f"{rep['graphs_expanded']} graphs expanded, {rep['graphs_explored']} explored"


def _stop_text(rep: dict[str, Any]) -> str:
    """Why the search stopped; a stop by the wall clock says that the result may differ between
    runs."""
    if rep["stopped"] == "time" and rep.get("max_explored") is not None:
        return (f"time: the wall-clock safety stop at {rep['time_limit_s']:.1f} s before "
                f"{rep['max_explored']} graphs; the result may differ between runs")
    return str(rep["stopped"])
