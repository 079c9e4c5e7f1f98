"""torchrun integration: who am I, and wait for the others.

``torchrun --nproc-per-node N -m parasal.indexer ...`` (or several nodes with
``--nnodes``/``--rdzv-*``) sets RANK, LOCAL_RANK and WORLD_SIZE; without them the job is a
world of one and no process group is created. Ranks only meet at barriers (gloo on CPU,
nccl on CUDA, initialised from the environment): after rank 0 prepares the work directory,
and after every rank has written its shards. The work directory must be on a filesystem
all ranks share (multi-node: NFS or similar); rank 0 merges and publishes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import DistributedError

__all__ = ["World", "init_world"]

DEFAULT_TIMEOUT_S = 24 * 3600  # ranks wait at barriers while others compute (or rank 0 resumes)


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def init_world(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """The World from torchrun's environment variables (a world of one without them)."""
    env = os.environ
    if "WORLD_SIZE" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return World()
    try:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise DistributedError(f"incomplete torchrun environment (RANK/WORLD_SIZE): {e}") from e
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if dist.is_initialized():
        return World(rank, world_size, local_rank, initialized_here=False)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return World(rank, world_size, local_rank, initialized_here=True)
