"""Reading torch.fx nodes, for the PyTorch frontend: whether a value is an FX node, a call's aten
target as a string, its argument tree with the nodes mapped, a graph module's attributes, and the
user's source line a node came from (for origins and error messages)."""
from __future__ import annotations

import os
import re
from typing import Any, Callable

__all__ = ["flat_args", "get_attr", "is_fx_node", "map_args", "target_str", "user_line"]


def is_fx_node(a: Any) -> bool:
    from torch import fx

    return isinstance(a, fx.Node)


def get_attr(gm: Any, target: str) -> Any:
    """``gm.a.b`` for the dotted ``target`` of a ``get_attr`` node."""
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def flat_args(n: Any) -> list[Any]:
    """The leaves of a node's (args, kwargs)."""
    from torch.utils import _pytree as pytree

    return pytree.tree_leaves((n.args, n.kwargs))


def map_args(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """Replace every fx Node in a (args, kwargs) tree by ``fn(node)``; tuples/lists/dicts kept."""
    if is_fx_node(tree):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(map_args(x, fn) for x in tree)
    if isinstance(tree, list):
        return [map_args(x, fn) for x in tree]
    if isinstance(tree, dict):
        return {k: map_args(v, fn) for k, v in tree.items()}
    return tree


def target_str(target: Any) -> str:
    """``"aten.add.Tensor"`` for an aten overload, "" for anything else."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return ""


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def user_line(n: Any) -> str:
    """The innermost stack frame outside torch itself: "file.py:12 in fn: code"."""
    st = n.meta.get("stack_trace") if hasattr(n, "meta") else None
    if not st:
        return ""
    frames = _FRAME.findall(st)
    if not frames:
        return ""
    torch_dir = os.sep + "torch" + os.sep
    pick = next((f for f in reversed(frames) if torch_dir not in f[0]), frames[-1])
    path, line, fn, code = pick
    return f"{os.path.basename(path)}:{line} in {fn}: {code.strip()}"

