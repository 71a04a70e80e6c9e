"""All-gather across ranks that keeps the gradient path to every rank's own shard.

`torch.distributed.all_gather` returns tensors without a gradient history, so a loss over gathered
features would train each rank's tower only through its local rows (SLIP's CLIP loss has that flaw).
Here the backward pass sums every rank's gradient for a shard and hands each rank the part that belongs
to its own input: with a per-rank loss whose mean over ranks is the global loss, DDP's gradient average
then equals the single-process gradient on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) outside distributed training."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """(b, ...) on each rank -> (world * b, ...) concatenated in rank order; backward sums over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = rank_and_world()
        ctx.rank, ctx.size = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # all_reduce works on every backend (gloo has no reduce_scatter); each rank keeps its own slice
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (b, ...) tensors of all ranks in rank order, gradients flowing back to each shard.

    Outside distributed training it returns `x` itself. Every rank must pass the same shape.
    """
    if rank_and_world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over ranks (no gradient), or `x` itself on one rank."""
    world = rank_and_world()[1]
    if world == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world
