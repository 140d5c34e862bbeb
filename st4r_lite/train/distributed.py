"""Multi-process data-parallel training helpers (torchrun / DDP), a no-op on a single process.

Dimension letters: none. Terms: rank (this process's index), world size (number of processes), local rank
(index on this machine, = the GPU it drives).

``torchrun --nproc_per_node K -m st4r_lite.cli pretrain ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; :func:`init_distributed` reads them, picks the backend (NCCL for CUDA, gloo for
CPU) and the device (``cuda:LOCAL_RANK``). Each rank draws different clips (the trainer offsets clip seeds by
rank); DDP averages the gradients, so every rank keeps identical weights; only rank 0 logs and saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from st4r_lite.errors import InputError
from st4r_lite.runtime import pick_device


@dataclass
class DistEnv:
    """Where this process stands: rank, world_size, local_rank, the torch device, and whether DDP is on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"environment variable {name}={text!r} must be a whole number (set by torchrun)") from None


def init_distributed(device: str | None = None) -> DistEnv:
    """Initialise the process group from RANK / WORLD_SIZE / LOCAL_RANK when WORLD_SIZE > 1.

    device: None/"auto" (CUDA when available), "cpu" or "cuda". Under DDP on CUDA each rank takes
    ``cuda:LOCAL_RANK``. Returns a :class:`DistEnv`; a single process gets ``enabled=False`` and no group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"inconsistent RANK={rank} / WORLD_SIZE={world_size}; launch with torchrun")
    dev = pick_device(device)
    if world_size == 1:
        return DistEnv(device=dev)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                             "use --nproc_per_node at most the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, enabled=True)


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op without DDP)."""
    if env.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is unchanged). Without DDP: the tensor itself."""
    if not env.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


def cleanup(env: DistEnv) -> None:
    """Destroy the process group if this module created one."""
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
