"""The one channel for "matched / not matched, and why": ``Candidate`` and ``Tracer``.

A rule looks at a place (its anchor node) and either rewrites it or says why not. The driver turns
each such look into a ``Candidate``; passes return them in ``PassResult.candidates``; the pipeline
collects them; ``graphopt explain`` and the report print them. Nothing else carries match
outcomes (no strings in stats).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..ir.node import Node
from .match import Match, MatchFail


def node_label(n: Node) -> str:
    o = f" [{n.origin}]" if n.origin else ""
    return f"{n.op} #{n.uid}{o}"


@dataclass(frozen=True)
class Candidate:
    """One place a rule looked at.

    ``kind`` names what the place is ("attention", "rms_norm", "matmul_group", ...), ``rule`` the
    rule that looked, ``anchor`` the node that names the place. When it did not match,
    ``reason`` is the failed condition and ``culprit`` the node where it failed; when it
    matched, ``detail`` says what the new op is and ``spelling`` which accepted spelling it saw.
    """

    kind: str
    rule: str
    anchor: Node
    matched: bool
    reason: str = ""
    culprit: Node | None = None
    detail: str = ""
    spelling: str = ""
    pass_name: str = ""
    rule_kind: str = ""  # the rule's kind: "fusion", "canonical", ...
    title: str = ""  # what places of this kind are, for listings ("attention blocks")

    @classmethod
    def of(cls, rule: Any, anchor: Node, res: "Match | MatchFail", pass_name: str = ""
           ) -> "Candidate":
        """What ``rule`` found at ``anchor``: its answer ``res`` as a candidate (of the rule's
        place; a rule without one is named by itself)."""
        kind = rule.place or rule.name
        common: dict[str, Any] = dict(pass_name=pass_name or rule.pass_name,
                                      rule_kind=rule.kind, title=rule.place_title or kind)
        if isinstance(res, MatchFail):
            return cls(kind, rule.name, anchor, False, res.reason, res.node, **common)
        return cls(kind, rule.name, anchor, True, detail=res.detail, spelling=res.spelling,
                   **common)

    @property
    def fused(self) -> bool:
        return self.matched

    @property
    def verb(self) -> str:
        return "fused" if self.rule_kind == "fusion" else "rewritten"

    def describe(self) -> str:
        where = node_label(self.anchor)
        if self.matched:
            bits = [b for b in (self.detail, self.spelling) if b]
            extra = f" ({'; '.join(bits)})" if bits else ""
            return f"{self.kind} at {where}: {self.verb} by {self.rule}{extra}"
        culprit = node_label(self.culprit) if self.culprit is not None else where
        return (f"{self.kind} at {where}: NOT {self.verb}: rule {self.rule}, node {culprit}: "
                f"{self.reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": self.rule, "pass": self.pass_name,
                "anchor": node_label(self.anchor), "matched": self.matched,
                "fused": self.matched if self.rule_kind == "fusion" else None,
                "reason": self.reason,
                "culprit": node_label(self.culprit) if self.culprit is not None else None,
                "detail": self.detail, "spelling": self.spelling}


@dataclass
class Tracer:
    """Collects candidates (at most ``limit``; the count of those left out is kept)."""

    limit: int = 100_000
    candidates: list[Candidate] = field(default_factory=list)
    dropped: int = 0

    def record(self, c: Candidate) -> None:
        if len(self.candidates) < self.limit:
            self.candidates.append(c)
        else:
            self.dropped += 1

    def extend(self, cs: Iterable[Candidate]) -> None:
        for c in cs:
            self.record(c)

    def of_kind(self, kind: str) -> list[Candidate]:
        return [c for c in self.candidates if c.kind == kind]

    def failures(self, rule: str | None = None) -> list[Candidate]:
        return [c for c in self.candidates if not c.matched and (rule is None or c.rule == rule)]

    def reasons(self, rule: str | None = None) -> list[str]:
        return [f"{c.rule}: {c.reason}" for c in self.failures(rule)]
