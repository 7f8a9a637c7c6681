"""Small e-graphs for the extraction tests: random ones, hand-made ones, and the brute-force
optimum over every choice (a few thousand at most)."""
from __future__ import annotations

import itertools
import random
from typing import Callable

import pytest

from graphopt.search.egraph.extract import ExtractionError, dag_cost
from graphopt.search.egraph.view import Choice, EGraphView, ENode


def random_view(rng: random.Random, n_classes: int = 6, max_nodes: int = 3,
                savings: bool = False) -> EGraphView:
    """Classes c0..c{n-1}; c0 is a leaf input, the last class is the root. An e-node mostly reads
    lower classes (a DAG with sharing) and sometimes a higher one or its own (cycles); costs are
    small integers, so optimal costs tie often. With ``savings``, some (consumer, producer)
    pairs save at most the cheaper one's cost."""
    ids = [f"c{i}" for i in range(n_classes)]
    classes: dict[str, list[ENode]] = {ids[0]: [ENode("in", (), 0.0)]}
    for i in range(1, n_classes):
        nodes = []
        for j in range(rng.randint(1, max_nodes)):
            kids = []
            for _ in range(rng.randint(0 if j == 0 and rng.random() < 0.3 else 1, 2)):
                hi = n_classes - 1 if rng.random() < 0.25 else i - 1
                kids.append(ids[rng.randint(0, hi)])
            nodes.append(ENode(f"op{i}_{j}", tuple(kids), float(rng.randint(0, 6))))
        classes[ids[i]] = nodes
    view = EGraphView(classes, [ids[-1]])
    if savings:
        for cid, nodes in classes.items():
            for j, node in enumerate(nodes):
                for k in dict.fromkeys(node.children):
                    for m, prod in enumerate(classes[k]):
                        if rng.random() < 0.3:
                            most = int(min(node.cost, prod.cost))
                            view.savings[(cid, j), (k, m)] = float(rng.randint(0, most))
    return view


def all_choices(view: EGraphView) -> list[Choice]:
    ids = list(view.classes)
    return [dict(zip(ids, pick)) for pick in itertools.product(*(range(len(view.classes[c])) for c in ids))]


def brute_force(view: EGraphView) -> float | None:
    """The least DAG cost over every acyclic choice; None when there is none."""
    best = None
    for choice in all_choices(view):
        try:
            cost = dag_cost(view, choice)
        except ExtractionError:
            continue
        best = cost if best is None else min(best, cost)
    return best


def random_cases(seed: int, count: int, savings: bool,
                 extractor: Callable[[EGraphView], object]) -> list[tuple[EGraphView, float]]:
    """``count`` random views of 3-7 classes with their optimum; a view with no acyclic choice
    is checked to make ``extractor`` raise the root's error, and left out."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        v = random_view(rng, n_classes=rng.randint(3, 7), savings=savings)
        best = brute_force(v)
        if best is None:
            with pytest.raises(ExtractionError, match="root e-class"):
                extractor(v)
            continue
        out.append((v, best))
    assert len(out) > 0.8 * count
    return out


def back_edge_view() -> EGraphView:
    """Class a's only cheap e-node reads b, whose cheap e-node reads a: using both is a cycle.
    The optimum (5) is b = mid, a = cheap(b)."""
    return EGraphView({
        "x": [ENode("in", (), 0.0)],
        "a": [ENode("cheap", ("b",), 0.0), ENode("dear", ("x",), 9.0)],
        "b": [ENode("back", ("a",), 0.0), ENode("mid", ("x",), 4.0)],
        "r": [ENode("out", ("a", "b"), 1.0)],
    }, ["r"])


def shared_roots_view() -> EGraphView:
    """r1 = mul(s, s), r2 = neg(r1), both roots (r1 named twice): s and r1 count once: 13."""
    return EGraphView({
        "x": [ENode("in", (), 0.0)],
        "s": [ENode("h", ("x",), 10.0)],
        "r1": [ENode("mul", ("s", "s"), 1.0)],
        "r2": [ENode("neg", ("r1",), 2.0)],
    }, ["r1", "r2", "r1"])


def merge_view() -> EGraphView:
    """Three outputs each computable alone (4 each) or as a slice of one merged e-node (6 in
    all): a per-reader (tree) cost counts the merged node three times; the DAG optimum is 6."""
    cls = {"x": [ENode("in", (), 0.0)], "m": [ENode("merged", ("x",), 6.0)]}
    for q in "qkv":
        cls[q] = [ENode("alone", ("x",), 4.0), ENode("slice", ("m",), 0.0)]
    cls["r"] = [ENode("out", ("q", "k", "v"), 0.0)]
    return EGraphView(cls, ["r"])


NODES_PER_CLASS = 5  # op, alt, view and the two of v(l, i)


def layered(n_nodes: int, width: int = 16, seed: int = 0) -> EGraphView:
    """A synthetic e-graph of about ``n_nodes`` e-nodes: layers of ``width`` classes over one
    input class. Class i of layer l has three e-nodes: ``op`` reads classes i and i+1 of layer
    l-1; ``alt`` is cheaper but also reads the layer's ``merged`` class (one dear e-node, worth it
    only when enough of the layer shares it: the merge case a per-reader cost gets wrong);
    ``view`` reads a class ``v(l, i)`` whose cheap e-node reads class (l, i) back (a cycle, as
    reshuffle rules make) and whose other e-node reads layer l-1. ``op`` pairs with the ``op``
    below it for a fusion saving. The last layer is the roots; costs are drawn from ``seed``."""
    rng = random.Random(seed)
    layers = max(1, n_nodes // (NODES_PER_CLASS * width + 1))
    classes: dict[str, list[ENode]] = {"in": [ENode("input", (), 0.0)]}
    savings = {}
    below = ["in"] * width
    for layer in range(layers):
        merged = f"m{layer}"
        classes[merged] = [ENode("merged", (below[0],), rng.uniform(0.3, 0.9) * width)]
        here = [f"c{layer}_{i}" for i in range(width)]
        for i, cid in enumerate(here):
            view = f"v{layer}_{i}"
            classes[cid] = [
                ENode("op", (below[i], below[(i + 1) % width]), rng.uniform(1.0, 3.0)),
                ENode("alt", (below[i], merged), rng.uniform(0.1, 0.8)),
                ENode("view", (view,), rng.uniform(0.0, 0.2)),
            ]
            classes[view] = [ENode("back", (cid,), 0.0), ENode("copy", (below[i],), rng.uniform(0.5, 3.5))]
            if layer > 0:
                savings[(cid, 0), (below[i], 0)] = rng.uniform(0.0, 0.5)
        below = here
    return EGraphView(classes, list(below), savings)
