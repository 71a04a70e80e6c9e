"""Two gloo processes give the same CLIP/SigLIP loss and gradients as one process on the global batch."""

import textwrap

WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from zir.losses import ClipLoss, SigLipLoss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    per_rank, dim = 4, 6
    images, texts = torch.randn(per_rank * world, 5), torch.randn(per_rank * world, 7)

    def setup(loss_cls, distributed):
        torch.manual_seed(1)  # identical towers and loss parameters in every process and run
        towers = nn.ModuleList([nn.Linear(5, dim), nn.Linear(7, dim)])
        return towers, loss_cls(gather_distributed=distributed)

    failures = []
    for loss_cls in (ClipLoss, SigLipLoss):
        towers, loss = setup(loss_cls, False)  # one process, whole global batch
        full = loss(towers[0](images), towers[1](texts))
        full.backward()
        want = [p.grad.clone() for p in list(towers.parameters()) + list(loss.parameters())]

        towers, loss = setup(loss_cls, True)  # this rank's shard only, then DDP's gradient average
        shard = slice(rank * per_rank, (rank + 1) * per_rank)
        local = loss(towers[0](images[shard]), towers[1](texts[shard]))
        local.backward()
        mean_loss = local.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        got = []
        for p in list(towers.parameters()) + list(loss.parameters()):
            dist.all_reduce(p.grad)
            got.append(p.grad / world)
        if not torch.allclose(mean_loss, full, atol=1e-6):
            failures.append(f"{loss_cls.__name__} loss {mean_loss.item()} != {full.item()}")
        for i, (g, w) in enumerate(zip(got, want)):
            if not torch.allclose(g, w, atol=1e-6):
                failures.append(f"{loss_cls.__name__} grad {i} differs by {(g - w).abs().max().item()}")
        # the local loss alone differs from the global one: the test would catch a no-op gather
        if rank == 0 and torch.allclose(local, full):
            failures.append(f"{loss_cls.__name__}: local loss equals global loss, test is too weak")
    # one file per rank: two processes printing at once interleave their lines in torchrun's output
    with open(f"rank{rank}.result", "w") as handle:
        handle.write(("FAIL " + repr(failures)) if failures else "OK")
    dist.destroy_process_group()
    sys.exit(1 if failures else 0)
''')


def test_two_process_clip_and_siglip_equal_single_process(run_two_ranks):
    results = run_two_ranks(WORKER, timeout=120)
    assert results == ["OK", "OK"], results
