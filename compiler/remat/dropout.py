"""Dropout split into its random draw and its deterministic application, in the joint graph.

``native_dropout(x, p, True)`` returns ``(x * mask * scale, mask)``: one random op, so neither
result may be recomputed in the backward, and a plan has to save the output (4 bytes an element)
as well as the mask the backward reads (1 byte). ``split_dropout`` rewrites each such call into

    mask_f = bernoulli.p(x, 1 - p)          # the random draw: never recomputed
    mask   = _to_copy(mask_f, dtype=bool)   # what native_dropout returns as its mask
    out    = mul.Scalar(mul.Tensor(x, mask), scale)

which is what ATen's CPU kernel computes, in the same order, from the same draw (``bernoulli_``
on an empty tensor of x's shape and dtype): the generator advances identically and the output is
bitwise the same (tests/remat check the gradients against plain autograd). The output is now a
pointwise function of x and the saved mask, so a plan may recompute it (the seed is replayed
by keeping the mask), and a saved mask is all that crosses to the backward.
"""
from __future__ import annotations

import operator
from typing import Any


def split_dropout(gm: Any) -> int:
    """Rewrite every training-mode ``native_dropout`` of ``gm``'s graph (in place, see the
    module docstring); returns how many."""
    import torch

    aten = torch.ops.aten
    g = gm.graph
    count = 0
    for n in list(g.nodes):
        if n.op != "call_function" or n.target is not aten.native_dropout.default:
            continue
        x, p = n.args[0], float(n.args[1])
        train = n.args[2] if len(n.args) > 2 else n.kwargs.get("train")
        if train is not True or not 0 < p < 1:
            continue
        val = x.meta["val"]
        with g.inserting_before(n):
            mask_f = g.call_function(aten.bernoulli.p, (x, 1.0 - p))
            mask = g.call_function(aten._to_copy.default, (mask_f,), {"dtype": torch.bool})
            kept = g.call_function(aten.mul.Tensor, (x, mask))
            out = g.call_function(aten.mul.Scalar, (kept, 1.0 / (1.0 - p)))
        for new, like in ((mask_f, val), (mask, val.to(torch.bool)), (kept, val), (out, val)):
            new.meta.update({k: v for k, v in n.meta.items() if k != "val"})
            new.meta["val"] = torch.empty_like(like)
        for u in list(n.users):
            if u.target is not operator.getitem:
                raise AssertionError(f"native_dropout {n.name} read by {u.name} whole")
            u.replace_all_uses_with(out if u.args[1] == 0 else mask)
            g.erase_node(u)
        g.erase_node(n)
        count += 1
    gm.recompile()
    return count
