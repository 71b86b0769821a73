"""Distributed data-parallel training under ``torchrun`` (gloo on the CPU, nccl on GPUs).

``torchrun --nproc_per_node=2 -m training run EXPERIMENT`` starts one process per rank;
:func:`setup` reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).
The model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`; other trained
modules (e.g. the ALDK critic, whose gradient penalty needs double backward, which DDP
does not support) are broadcast from rank 0 at the start and their gradients averaged
by :func:`average_gradients`. Each rank samples its own shard of the training pairs;
rank 0 alone validates and writes checkpoints.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> Dist:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_module(module: torch.nn.Module) -> None:
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(module: torch.nn.Module, world: int) -> None:
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def any_true(flag: bool, d: Dist) -> bool:
    """True on every rank when ``flag`` is true on any (keeps the ranks' loops in step)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(obj: Any, d: Dist) -> List[Any]:
    """Every rank's ``obj`` (a picklable object), on every rank."""
    if not d.enabled:
        return [obj]
    out: List[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def checksum(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def teardown(d: Dist) -> None:
    """Leave the process group once every rank is here (a rank destroying gloo's connections while a
    peer still uses them can abort the peer at exit)."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
