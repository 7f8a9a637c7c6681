"""``graphopt explain MODEL``: what every rule of ``optimize()`` looked at, rewritten or not, and
for each place not rewritten the rule, the node and the failed condition.

It is a dry run of the real pipeline (``pipeline.run`` with the numeric check off and, unless a
budget is given, the search off): the candidates printed are the ones the passes themselves
reported while rewriting, in the order they ran. Nothing is written.

With ``kv_cache`` it also runs the KV-cache derivation (``graphopt.kv``) on the graph the
pipeline leaves: for a legal decoder each attention's measured mask, the cache layout and the
positions that become ``position_ids``; for an illegal one every refusal (node and reason).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ir.graph import Graph
from .rewrite.trace import Candidate


@dataclass
class KVExplanation:
    """What the KV-cache derivation found: ``refusals`` (empty when legal), and for a legal
    decoder the masks, the cache layout (``CacheSpec`` fields) and the derivation's notes."""

    max_length: int | None
    refusals: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    layout: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def legal(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        return {"legal": self.legal, "max_length": self.max_length, "refusals": self.refusals,
                "masks": self.masks, "layout": self.layout, "notes": self.notes}

    def text(self) -> str:
        if not self.legal:
            lines = [f"kv cache: refused ({len(self.refusals)} reason"
                     f"{'s' if len(self.refusals) > 1 else ''})"]
            return "\n".join(lines + [f"  {r}" for r in self.refusals])
        ly = self.layout or {}
        lines = [f"kv cache: legal ({len(self.masks)} causal attentions)"]
        lines += [f"  attention {m}" for m in self.masks]
        lines.append(f"  cache: {ly.get('num_layers')} layers, {ly.get('num_kv_heads')} kv heads "
                     f"(of {ly.get('num_heads')} query heads), head size {ly.get('head_size')}, "
                     f"window {ly.get('window') or 'none'}, context length "
                     f"{ly.get('context_length')}, {ly.get('dtype')}")
        pos = [n for n in self.notes if "position_ids" in n]
        lines += [f"  position_ids: {n}" for n in pos] or [
            "  position_ids: no arange(S) position in the graph (none replaced)"]
        lines += [f"  note: {n}" for n in self.notes if n not in pos]
        return "\n".join(lines)


def explain_kv(g: Graph, max_length: int | None = None) -> KVExplanation:
    """Run the KV-cache derivation of decoder ``g`` as a dry run (nothing is exported or
    checked) and collect what it decided or, when it is illegal, every refusal: the ops that
    mix positions and every attention whose mask is not causal."""
    from dataclasses import asdict

    from .errors import GraphOptError
    from .kv.derive import derive
    from .kv.seqaxis import KVCacheError, analyze
    from .kv.stage import _mask_summary

    try:
        info = analyze(g)
    except KVCacheError as e:  # no token input, a static sequence axis
        return KVExplanation(max_length, [e.one_line()])
    refusals = [str(r) for r in info.refusals]
    if not refusals:
        try:
            d = derive(g, max_length)
        except KVCacheError as e:
            refusals = _mask_refusals(g, info, max_length) or [e.one_line()]
        else:
            return KVExplanation(max_length, [], _mask_summary(d), asdict(d.spec), d.notes)
    else:
        try:
            refusals += _mask_refusals(g, info, max_length)
        except GraphOptError as e:  # the masks cannot be measured: the op refusals stand
            refusals.append(f"(masks not measured: {e.one_line()})")
    return KVExplanation(max_length, refusals)


def _mask_refusals(g: Graph, info: Any, max_length: int | None) -> list[str]:
    """Every attention whose mask is not a causal one (measured as ``derive`` measures it)."""
    from .kv.derive import DEFAULT_MAX_LENGTH, position_limit
    from .kv.probe import Prober

    ml = int(max_length or DEFAULT_MAX_LENGTH)
    prober = Prober(g, info)
    limit = position_limit(g, info, prober)
    ml = min(ml, limit) if limit is not None else ml
    seen: dict[tuple[int, int, bool], Any] = {}
    out = []
    for att in info.attentions:
        m = att.inputs[3] if len(att.inputs) == 4 else None
        key = (id(m.node) if m else -1, m.index if m else -1, bool(att.attrs["causal"]))
        if key not in seen:
            seen[key] = prober.mask_facts(att, ml)
        if isinstance(seen[key], str):
            out.append(f"{att.where}: {seen[key]}")
    return out


@dataclass
class Explanation:
    source: str
    target: str
    candidates: list[Candidate]
    search: dict[str, Any] | None = None
    kv: KVExplanation | None = None

    def of_kind(self, kind: str) -> list[Candidate]:
        return [c for c in self.candidates if c.kind == kind]

    def kinds(self) -> list[str]:
        """Candidate kinds in the order the pipeline first reported them."""
        return list(dict.fromkeys(c.kind for c in self.candidates))

    def to_dict(self) -> dict[str, Any]:
        d = {"source": self.source, "target": self.target,
             "candidates": [c.to_dict() for c in self.candidates], "search": self.search}
        if self.kv is not None:
            d["kv_cache"] = self.kv.to_dict()
        return d

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
        if self.kv is not None:
            lines.append(self.kv.text())
        return "\n".join(lines)


def explain_model(model: Any, example_inputs: Any = None, target: str = "cpu",
                  allow_contrib_ops: bool = False, budget: float = 0.0, quantize: Any = None,
                  calibration: Any = None, kv_cache: bool = False,
                  max_length: int | None = None) -> Explanation:
    """Explain ``model`` (an .onnx path, ModelProto, nn.Module with example inputs, or Graph):
    run ``optimize()``'s steps without the check (search only with a ``budget`` in seconds;
    quantization only with ``quantize=MODE``, then without mixed precision, which needs the
    check) and return every candidate the rules reported. ``kv_cache``: also the KV-cache
    derivation's decisions or refusals (``explain_kv``; a torch module is then exported with
    a dynamic sequence length, as ``optimize(kv_cache=True)`` does)."""
    from .pipeline import Source, lift, resolve_source, run

    qcfg = None
    if quantize is not None:
        from .quant.config import make_config

        qcfg = make_config(quantize)
    if max_length is not None and not kv_cache:
        from .errors import GraphOptError

        raise GraphOptError("max_length applies to the KV cache: pass kv_cache=True too",
                            where="kv_cache")
    src = resolve_source(model, example_inputs)
    if kv_cache and src.kind == "torch":
        src = Source("graph", lift(src, dynamic=True), src.label)
    out = run(src, target=target, check=False, budget=budget,
              allow_contrib_ops=allow_contrib_ops, quantize=qcfg, calibration=calibration)
    kv = explain_kv(out.graph, max_length) if kv_cache else None
    return Explanation(src.label, out.report["target"], out.candidates, out.report.get("search"),
                       kv)
