from __future__ import annotations

from graphopt.subst.enumerate import Enumerator
from graphopt.subst.scenario import OpSpec, Scenario, transpose_perms

TINY = Scenario("tiny", inputs=(("x", ("a", "b")), ("y", ("a", "b"))),
                ops=(OpSpec("add", 2), OpSpec("relu", 1),
                     OpSpec("transpose", 1, transpose_perms(2))))


def test_counts_and_no_duplicates() -> None:
    en = Enumerator(TINY, 2).run()
    # 1 op: add(x,x) add(x,y) add(y,y) relu(x) relu(y) transpose(x) transpose(y);
    # graphs reading only y are renamings of graphs reading only x
    assert en.stats.by_ops[1] == 4
    seen = set()
    for recs in en.buckets.values():
        for r in recs:
            assert (r.nodes, r.outputs) not in seen
            seen.add((r.nodes, r.outputs))
            assert len(set(r.nodes)) == len(r.nodes)


def test_transpose_pair_bucketed_with_input() -> None:
    en = Enumerator(TINY, 2).run()
    x = en.vhash[0]
    bucket = en.buckets[(x,)]
    ops = sorted(tuple(en.nodes[n].op for n in r.nodes) for r in bucket)
    assert ("transpose", "transpose") in ops and () in ops


def test_deterministic() -> None:
    a = Enumerator(TINY, 2, seed=3).run()
    b = Enumerator(TINY, 2, seed=3).run()
    assert list(a.buckets) == list(b.buckets)
