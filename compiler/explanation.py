"""``graphopt explain MODEL``: what every rule of ``optimize()`` looked at, rewritten or not, and
for each place not rewritten the rule, the node and the failed condition.

It is a dry run of the real pipeline (``pipeline.run`` with the numeric check off and, unless a
budget is given, the search off): the candidates printed are the ones the passes themselves
reported while rewriting, in the order they ran. Nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rewrite.trace import Candidate


@dataclass
class Explanation:
    source: str
    target: str
    candidates: list[Candidate]
    search: dict[str, Any] | None = None

    def of_kind(self, kind: str) -> list[Candidate]:
        return [c for c in self.candidates if c.kind == kind]

    def kinds(self) -> list[str]:
        """Candidate kinds in the order the pipeline first reported them."""
        return list(dict.fromkeys(c.kind for c in self.candidates))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target,
                "candidates": [c.to_dict() for c in self.candidates], "search": self.search}

    def text(self) -> str:
        lines = [f"{self.source} (target {self.target})"]
        if not self.candidates:
            lines.append("no rule found a place to look at")
        for kind in self.kinds():
            cs = self.of_kind(kind)
            verb = cs[0].verb
            done = sum(1 for c in cs if c.matched)
            lines.append(f"{cs[0].title or kind}: {len(cs)} found, {done} {verb}, "
                         f"{len(cs) - done} not {verb}")
            lines += [f"  {c.describe()}" for c in cs]
        if self.search:
            from .search.stage import format_search

            lines.append(format_search(self.search))
        return "\n".join(lines)


def explain_model(model: Any, example_inputs: Any = None, target: str = "cpu",
                  allow_contrib_ops: bool = False, budget: float = 0.0, quantize: Any = None,
                  calibration: Any = None) -> Explanation:
    """Explain ``model`` (an .onnx path, ModelProto, nn.Module with example inputs, or Graph):
    run ``optimize()``'s steps without the check (search only with a ``budget`` in seconds;
    quantization only with ``quantize=MODE``, then without mixed precision, which needs the
    check) and return every candidate the rules reported."""
    from .pipeline import resolve_source, run

    qcfg = None
    if quantize is not None:
        from .quant.config import make_config

        qcfg = make_config(quantize)
    src = resolve_source(model, example_inputs)
    out = run(src, target=target, check=False, budget=budget,
              allow_contrib_ops=allow_contrib_ops, quantize=qcfg, calibration=calibration)
    return Explanation(src.label, out.report["target"], out.candidates, out.report.get("search"))
