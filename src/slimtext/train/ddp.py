"""Distributed data parallel set-up for `torchrun` (PyTorch's own engine, nothing home-made).

`torchrun --nproc-per-node N -m slimtext train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `init_from_env()` joins the process group (gloo on CPU, nccl on CUDA).
The loop then wraps the model in DistributedDataParallel and gives every rank its 1/N share of
each (seeded, identical) global batch; rank 0 alone writes logs, checkpoints and the summary.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env() -> tuple[int, int]:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; returns (rank, world)."""
    if world_size_from_env() > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank(), world()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
