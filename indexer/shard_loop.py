"""One rank's loop over its shards: skip the finished ones, compute the rest, write each atomically.

Shared by the profile pass (pipeline.py) and the reference pass (reference_setup.py), so
both resume, distribute (shard ``j`` on rank ``j % world_size``) and show progress alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .shards import Shard, ShardPlan, WorkDir

__all__ = ["run_shards"]

log = logging.getLogger(__name__)


def run_shards(
    plan: ShardPlan,
    work: WorkDir,
    world,
    compute: Callable[[Shard, Callable[[int], None] | None], object],
    *,
    progress: bool,
    desc: str,
    on_written: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Compute this rank's unfinished shards with ``compute(shard, on_samples)`` (a result
    ``work.write`` stores); returns (samples computed, shards resumed). ``on_written`` is
    called with each shard's index once its file is durable (tests inject crashes there);
    rank 0 shows a progress bar named ``desc``."""
    mine = plan.for_rank(world.rank, world.world_size)
    done = [s for s in mine if work.is_done(s)]
    todo = [s for s in mine if s not in done]
    if done and world.is_main:
        log.info(
            "resuming %s: %d of %d shard(s) of this rank already done in %s", desc, len(done), len(mine), work.path
        )
    bar = None
    if progress and world.is_main:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(len(s) for s in mine),
            initial=sum(len(s) for s in done),
            unit="img",
            desc=desc if world.world_size == 1 else f"{desc} (rank 0 of {world.world_size})",
            dynamic_ncols=True,
            smoothing=0.05,
        )
    computed = 0
    try:
        for shard in todo:
            work.write(compute(shard, bar.update if bar is not None else None))
            computed += len(shard)
            if on_written is not None:
                on_written(shard.index)
    finally:
        if bar is not None:
            bar.close()
    return computed, len(done)
