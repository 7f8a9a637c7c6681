"""Writing a plan as a shard folder: the ranks' programs go through ``folder.write_folder``,
whose ``check`` hook sees the folder read back from disk; the check joins those programs in the
global view and runs them against the original model, so what is written is what was checked.
A failure leaves nothing behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .folder import ShardFolder
    from .stage import ShardPlan


def save_plan(plan: "ShardPlan", out_dir: str | os.PathLike[str], inputs: Any = None) -> Path:
    from .folder import write_folder
    from .stage import check_programs

    def check(folder: "ShardFolder") -> None:
        if plan.source is None:
            return
        graphs = [folder.graph(r) for r in range(folder.world_size)]
        check_programs(plan.source, plan.original, graphs, inputs)

    return write_folder(out_dir, [plan.rank_graph(r) for r in range(plan.world_size)],
                        meta={"report": plan.report}, check=check)
