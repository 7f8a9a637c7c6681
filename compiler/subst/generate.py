"""The generator pipeline: enumerate -> fingerprint buckets -> candidates -> prune -> float test
-> z3 proof -> derivability pruning (``derive.py``) -> rule files. Deterministic for a seed: same
seed, byte-identical rule files."""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .derive import (DEFAULT_DEPTH, DEFAULT_MAX_GRAPHS, DEFAULT_MAX_GROWTH, PruneReport,
                     by_source, prune)
from .enumerate import Enumerator
from .prune import (Pair, ac_equal, common_output, common_subgraph, congruent, minimal_costs,
                    noncanonical, orient, renaming_key)
from .rulefile import SubstRule, make_rule, write_dir, write_manifest
from .scenario import SCENARIOS, Scenario
from .verify import Verdict, verify_text

PRUNINGS = ("noncanonical", "transitive", "separable", "inputs", "common_output", "supergraph", "assoc_comm",
            "renaming", "subgraph")

Progress = Callable[[str], None]


@dataclass
class ScenarioStats:
    name: str
    graphs: int = 0
    states: int = 0
    ops_built: int = 0
    buckets: int = 0  # fingerprints shared by 2+ graphs
    pairs: int = 0  # same-fingerprint pairs before pruning
    pruned: dict[str, int] = field(default_factory=dict)
    candidates: int = 0  # pairs left for verification
    enum_s: float = 0.0
    prune_s: float = 0.0

    def bump(self, k: str) -> None:
        self.pruned[k] = self.pruned.get(k, 0) + 1


@dataclass
class Report:
    max_ops: int
    seed: int
    jobs: int
    scenarios: list[ScenarioStats] = field(default_factory=list)
    duplicates: int = 0  # candidates found by two scenarios
    verified: int = 0
    rejected_numeric: int = 0
    rejected_z3: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    derive: PruneReport | None = None  # the derivability pruning of the proven rules
    wall: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    cpu: dict[str, float] = field(default_factory=dict)  # stage -> summed worker seconds
    files: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (name, stage, reason)

    @property
    def graphs(self) -> int:
        return sum(s.graphs for s in self.scenarios)

    @property
    def candidates(self) -> int:
        return sum(s.candidates for s in self.scenarios)

    def pruned(self) -> dict[str, int]:
        out = {k: 0 for k in PRUNINGS}
        for s in self.scenarios:
            for k, v in s.pruned.items():
                out[k] = out.get(k, 0) + v
        return out

    def table(self) -> str:
        rows = [("scenario", "graphs", "buckets", "pairs", "pruned", "candidates",
                 "enum s", "prune s")]
        for s in self.scenarios:
            rows.append((s.name, str(s.graphs), str(s.buckets), str(s.pairs),
                         str(sum(s.pruned.values())), str(s.candidates), f"{s.enum_s:.1f}",
                         f"{s.prune_s:.1f}"))
        tot = ("total", str(self.graphs), str(sum(s.buckets for s in self.scenarios)),
               str(sum(s.pairs for s in self.scenarios)),
               str(sum(sum(s.pruned.values()) for s in self.scenarios)), str(self.candidates),
               f"{sum(s.enum_s for s in self.scenarios):.1f}",
               f"{sum(s.prune_s for s in self.scenarios):.1f}")
        rows.append(tot)
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r))
                 for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        pr = self.pruned()
        lines.append("")
        lines.append("pruned before proof: " + ", ".join(f"{k} {v}" for k, v in pr.items()))
        lines.append(f"duplicates across scenarios: {self.duplicates}")
        lines.append(f"verification: {self.candidates - self.duplicates} candidates, "
                     f"{self.rejected_numeric} rejected by the float test, {self.rejected_z3} "
                     f"not proven by z3, {self.verified} proven "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(self.by_method.items()))})")
        if self.derive is not None:
            lines.append(f"derivability: {self.derive.before} proven -> {self.derive.kept} "
                         f"kept ({self.derive.dropped} derivable from smaller ones at depth "
                         f"{self.derive.depth}, {self.derive.kept_used} of those kept as used)")
        lines.append(f"kept: {self.kept} rules (max ops {self.max_ops}, seed {self.seed}, "
                     f"jobs {self.jobs})")
        lines.append("time (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.wall.items()))
        lines.append("time (cpu s):  " + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu.items()))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "max_ops": self.max_ops, "seed": self.seed, "jobs": self.jobs,
            "graphs": self.graphs, "candidates": self.candidates, "duplicates": self.duplicates,
            "pruned": self.pruned(), "verified": self.verified,
            "rejected_numeric": self.rejected_numeric, "rejected_z3": self.rejected_z3,
            "by_method": self.by_method, "kept": self.kept, "wall_s": self.wall,
            "derive": None if self.derive is None else self.derive.as_dict(),
            "cpu_s": self.cpu,
            "scenarios": [s.__dict__ for s in self.scenarios],
        }


def restrict(sc: Scenario, ops: Sequence[str] | None) -> Scenario | None:
    if not ops:
        return sc
    keep = tuple(s for s in sc.ops if s.op in ops)
    if not keep:
        return None
    return Scenario(sc.name, sc.inputs, keep, sc.max_outputs, sc.proof_dims, sc.test_dims,
                    sc.max_ops)


def candidates(sc: Scenario, max_ops: int, seed: int,
               progress: Progress | None = None) -> tuple[ScenarioStats, list[SubstRule]]:
    """Enumerate one scenario and turn its same-fingerprint pairs into pruned candidate rules."""
    st = ScenarioStats(sc.name)
    t0 = time.perf_counter()
    en = Enumerator(sc, sc.ops_limit(max_ops), seed=seed, progress=progress).run()
    st.enum_s = time.perf_counter() - t0
    st.graphs, st.states, st.ops_built = en.stats.graphs, en.stats.states, en.stats.nodes
    t1 = time.perf_counter()
    best = minimal_costs(en)
    rng = np.random.default_rng(seed + 1)
    seen: set[tuple] = set()
    pairs: list[Pair] = []
    for recs in en.buckets.values():
        if len(recs) < 2:
            continue
        st.buckets += 1
        st.pairs += len(recs) * (len(recs) - 1) // 2
        keep = [r for r in recs if not noncanonical(en, r, best)]
        dropped = len(recs) - len(keep)
        if dropped:
            # every pair with a non-canonical side goes
            st.pruned["noncanonical"] = st.pruned.get("noncanonical", 0) + (
                len(recs) * (len(recs) - 1) // 2 - len(keep) * (len(keep) - 1) // 2)
        sep = {r: en.separable(r) for r in keep}
        # pair every graph with one smallest graph of the bucket only: any other pair follows
        # from two of these by transitivity (rules apply in both directions)
        if len(keep) < 2:
            continue
        rep = min(keep, key=lambda r: (len(r.nodes), r.nodes))
        st.pruned["transitive"] = st.pruned.get("transitive", 0) + (
            len(keep) * (len(keep) - 1) // 2 - (len(keep) - 1))
        for a in keep:
            if a is rep:
                continue
            b = rep
            if sep[a] and sep[b]:
                st.bump("separable")
                continue
            p = orient(en, a, b)
            if p is None:
                st.bump("inputs")
                continue
            if common_output(p):
                st.bump("common_output")
                continue
            if congruent(en, p):
                st.bump("supergraph")
                continue
            if ac_equal(en, p):
                st.bump("assoc_comm")
                continue
            key = renaming_key(en, p)
            if key in seen:
                st.bump("renaming")
                continue
            seen.add(key)
            if set(p.lhs.nodes) & set(p.rhs.nodes) or common_subgraph(en, p, rng):
                st.bump("subgraph")
                continue
            pairs.append(p)
    rules = [make_rule(sc.name, en.to_graph(p.lhs, en.inputs_of(p.lhs), "lhs"),
                       en.to_graph(p.rhs, en.inputs_of(p.rhs), "rhs")) for p in pairs]
    st.candidates = len(rules)
    st.prune_s = time.perf_counter() - t1
    return st, rules


def _cand_worker(args: tuple[str, tuple[str, ...] | None, int, int]
                 ) -> tuple[ScenarioStats, list[str]]:
    name, ops, max_ops, seed = args
    sc = restrict(SCENARIOS[name], ops)
    assert sc is not None
    st, rules = candidates(sc, max_ops, seed)
    return st, [r.text() for r in rules]


def generate(max_ops: int = 4, scenarios: Sequence[str] | None = None,
             ops: Sequence[str] | None = None, out: Path | str | None = None, jobs: int = 1,
             seed: int = 0, timeout_ms: int = 5000,
             progress: Progress | None = None, depth: int | None = DEFAULT_DEPTH,
             max_graphs: int = DEFAULT_MAX_GRAPHS, keep: Sequence[str] = (),
             max_growth: int | None = DEFAULT_MAX_GROWTH
             ) -> tuple[Report, dict[str, list[SubstRule]]]:
    """Run the whole generator; writes rule files (and the pruning manifest) to ``out`` when
    given. ``depth``/``max_graphs``/``keep``/``max_growth``: the derivability pruning
    (``derive.prune``; depth None skips it)."""
    from .rulefile import loads

    say = progress or (lambda s: None)
    rep = Report(max_ops, seed, jobs)
    names = list(scenarios) if scenarios else list(SCENARIOS)
    scs = []
    for n in names:
        if n not in SCENARIOS:
            raise ValueError(f"unknown scenario {n!r} (have: {', '.join(SCENARIOS)})")
        r = restrict(SCENARIOS[n], ops)
        if r is not None:
            scs.append(r)
    ctx = mp.get_context("fork")

    # 1-2. enumeration, fingerprints, candidates, pruning (one scenario per worker)
    t0 = time.perf_counter()
    say(f"enumerating {len(scs)} scenarios up to {max_ops} ops ({jobs} jobs)")
    tasks = [(sc.name, tuple(ops) if ops else None, max_ops, seed) for sc in scs]
    if jobs > 1 and len(tasks) > 1:
        # biggest scenarios first so the pool stays busy
        with ctx.Pool(min(jobs, len(tasks))) as pool:
            results = pool.map(_cand_worker, tasks, chunksize=1)
    else:
        results = [_cand_worker(t) for t in tasks]
    cands: list[tuple[str, str]] = []
    seen_text: set[str] = set()
    for st, texts in results:
        rep.scenarios.append(st)
        say(f"  {st.name}: {st.graphs} graphs, {st.buckets} buckets, {st.pairs} pairs, "
            f"{st.candidates} candidates ({st.enum_s:.1f}s + {st.prune_s:.1f}s)")
        for t in texts:
            body = t.split("\n", 1)[1]  # the same rule from two scenarios: keep the first
            if body in seen_text:
                rep.duplicates += 1
                continue
            seen_text.add(body)
            cands.append((t, st.name))
    rep.wall["enumerate+prune"] = time.perf_counter() - t0
    rep.cpu["enumerate"] = sum(s.enum_s for s in rep.scenarios)
    rep.cpu["prune"] = sum(s.prune_s for s in rep.scenarios)

    # 3. verification: float re-test, then z3
    t1 = time.perf_counter()
    say(f"verifying {len(cands)} candidates")
    args = [(t, src, seed, timeout_ms) for t, src in cands]
    verdicts: list[Verdict] = []
    chunk = max(1, min(64, len(args) // (8 * max(jobs, 1)) or 1))
    if jobs > 1:
        with ctx.Pool(jobs) as pool:
            for i, v in enumerate(pool.imap(verify_text, args, chunksize=chunk)):
                verdicts.append(v)
                if (i + 1) % 1000 == 0:
                    say(f"  verified {i + 1}/{len(args)}")
    else:
        for i, a in enumerate(args):
            verdicts.append(verify_text(a))
            if (i + 1) % 1000 == 0:
                say(f"  verified {i + 1}/{len(args)}")
    rep.wall["verify"] = time.perf_counter() - t1
    rep.cpu["numeric"] = sum(v.numeric_s for v in verdicts)
    rep.cpu["z3"] = sum(v.z3_s for v in verdicts)

    # 4. keep the proven ones, by scenario, sorted by name
    by_file: dict[str, list[SubstRule]] = {}
    for (t, src), v in zip(cands, verdicts):
        if v.ok:
            rep.verified += 1
            rep.by_method[v.method] = rep.by_method.get(v.method, 0) + 1
            (rule,) = loads(t, src)
            by_file.setdefault(src, []).append(SubstRule(rule.name, rule.lhs, rule.rhs, src))
        else:
            if v.stage == "numeric":
                rep.rejected_numeric += 1
            else:
                rep.rejected_z3 += 1
            rep.rejected.append((v.name, v.stage, v.reason))
    for k in by_file:
        by_file[k].sort(key=lambda r: r.name)
    # 5. drop the rules the smaller kept ones derive
    if depth is not None:
        t3 = time.perf_counter()
        say(f"derivability pruning of {sum(len(v) for v in by_file.values())} rules")
        kept, rep.derive = prune([r for k in sorted(by_file) for r in by_file[k]], depth,
                                 max_graphs, keep, max_growth, progress=say)
        by_file = {k: by_source(kept).get(k, []) for k in by_file}
        rep.wall["derive"] = time.perf_counter() - t3
    rep.kept = sum(len(v) for v in by_file.values())
    t2 = time.perf_counter()
    if out is not None:
        rep.files = [str(p) for p in write_dir(by_file, out)]
        if rep.derive is not None:
            rep.files.append(str(write_manifest(out, rep.derive.manifest())))
    rep.wall["write"] = time.perf_counter() - t2
    rep.wall["total"] = time.perf_counter() - t0
    return rep, by_file
