"""Why rules did not fire: the search report's account of the rules that did not change the
result (``search_step``'s ``why_not`` entry, ``format_search``'s short form).

* refused: a rule's pattern matched but its check refused the place (``Matcher.failures``:
  the check's reason) or the search refused the rewrite (a cycle, a no-op, a right side that
  could not be built), per (rule, reason), with the count of places;
* not cheaper: rewrites that were built and priced but are not on the path to the best graph
  (the cost model found them no cheaper, or a cheaper graph was found another way), per rule,
  with the count of rewrites tried and the least estimated cost change of one (microseconds);
* unmatched: how many rules of the set never matched at all;
* absent ops: the generated rule directions that were not even loaded because their left side
  uses ops the graph lacks (``ruleset.default_rules(ops=...)``), and, for those one op short,
  which op they need, most often first.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..ir.graph import Graph
from ..rewrite.rule import Rule
from .result import SearchResult

SHORT = 3  # entries of each list in the text report


def why_not(res: SearchResult, rules: Sequence[Rule], g: Graph,
            generated_dir: Any = None) -> dict[str, Any]:
    """The report entry: refused (rule, reason, count), not cheaper (rule, tried), the count of
    unmatched rules and the generated rule directions missing ops of ``g``."""
    refused: dict[tuple[str, str], int] = {}
    for src in (res.failed_checks, res.refused):
        for k, v in src.items():
            refused[k] = refused.get(k, 0) + v
    rows = [{"rule": r, "reason": why, "count": n}
            for (r, why), n in sorted(refused.items(), key=lambda kv: (-kv[1], kv[0]))]
    not_cheaper = [{"rule": r, "tried": n, "best_delta_us": _us(res.best_delta.get(r))}
                   for r, n in sorted(res.tried.items(), key=lambda kv: (-kv[1], kv[0]))
                   if r not in res.applied]
    seen = {r for r, _ in refused} | set(res.tried)
    return {"refused": rows, "not_cheaper": not_cheaper,
            "unmatched": sum(1 for r in rules if r.name not in seen),
            "absent_ops": absent_ops(g, generated_dir)}


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 3)


def absent_ops(g: Graph, generated_dir: Any = None, top: int = 8) -> dict[str, Any]:
    """Generated rule directions whose left side uses ops ``g`` lacks: how many, and the ops
    the ones a single op short need (op -> directions, most first, ``top`` of them)."""
    from .ruleset import graph_ops, scan

    have = graph_ops(g)
    missing = 0
    one_short: dict[str, int] = {}
    for e in scan(generated_dir):
        for side in (e.lhs_ops, e.rhs_ops):
            lack = side - have
            if not lack:
                continue
            missing += 1
            if len(lack) == 1:
                o = next(iter(lack))
                one_short[o] = one_short.get(o, 0) + 1
    ranked = sorted(one_short.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {"directions": missing, "one_op_short": dict(ranked)}


def format_why_not(w: dict[str, Any]) -> str:
    """The short form: the most frequent refusals and the rules tried but not cheaper."""
    def short(items: list[str]) -> str:
        more = len(items) - SHORT
        return ", ".join(items[:SHORT]) + (f" +{more} more" if more > 0 else "")

    parts = []
    if w["refused"]:
        parts.append("refused: " + short([f"{r['rule']} ({r['reason']}) x{r['count']}"
                                          for r in w["refused"]]))
    if w["not_cheaper"]:
        parts.append("not cheaper: " + short([f"{r['rule']} x{r['tried']}" + (
            f" ({r['best_delta_us']:+.2f} us at best)" if r.get("best_delta_us") is not None
            else "") for r in w["not_cheaper"]]))
    return "; ".join(parts)
