"""Process-group set-up for `torchrun`: rank, world size, device, backend (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from zir.errors import ConfigError


@dataclass
class Dist:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started: bool = False  # whether this module created the process group (and must destroy it)

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this rank's CUDA device when there is one, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r}: no CUDA device is available here; use cpu or auto")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device='mps': MPS is not available here; use cpu or auto")
    return torch.device(name)


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world <= 1:
        return Dist(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                **({"device_id": dev} if dev.type == "cuda" else {}))
        started = True
    return Dist(dist.get_rank(), dist.get_world_size(), local, dev, started)


def teardown(d: Dist) -> None:
    """Leave the process group if this module joined it."""
    if d.started and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a small tensor over all ranks (a no-op for one process)."""
    if d.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj, d: Dist):
    """Rank 0's Python object on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    """Wait for every rank."""
    if d.enabled:
        dist.barrier()


def shard_model(model: nn.Module) -> None:
    """FSDP (fully_shard): each block of every tower is its own unit, the rest (heads, teachers) one root unit.

    A block is an element of an nn.ModuleList that holds no list itself: ViT and text blocks, the blocks in
    each Swin stage, the layers of a pretrained BERT-style text tower. Every parameter has at least one
    dimension (fully_shard refuses 0-d ones; the losses store their temperatures with shape (1,)).
    """
    from torch.distributed.fsdp import fully_shard

    towers = getattr(model, "towers", None)
    for tower in (towers.values() if isinstance(towers, nn.ModuleDict) else list(model.children())):
        for blocks in [m for m in tower.modules() if isinstance(m, nn.ModuleList)]:
            for block in blocks:
                if not any(isinstance(m, nn.ModuleList) for m in block.modules()) and any(True for _ in block.parameters()):
                    fully_shard(block)
    fully_shard(model)
