"""Two gloo processes: SimCLR's NT-Xent and DINO's centre equal one process on the global batch."""

import textwrap

WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from zir.objectives.dino import update_center
    from zir.objectives.simclr import nt_xent

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    per_rank = 4
    a, b = torch.randn(per_rank * world, 5), torch.randn(per_rank * world, 5)
    failures = []

    def tower():
        torch.manual_seed(1)
        return nn.Linear(5, 6)

    net = tower()
    # the global loss computed without the process group: every rank computes it on the full batch
    z1, z2 = nn.functional.normalize(net(a), dim=-1), nn.functional.normalize(net(b), dim=-1)
    z = torch.cat([z1, z2])
    logits = z @ z.T / 0.2
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    full = nn.functional.cross_entropy(logits, target)
    full.backward()
    want = [p.grad.clone() for p in net.parameters()]

    net = tower()
    shard = slice(rank * per_rank, (rank + 1) * per_rank)
    local, _ = nt_xent(net(a[shard]), net(b[shard]), 0.2)
    local.backward()
    mean_loss = local.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    if not torch.allclose(mean_loss, full, atol=1e-6):
        failures.append(f"loss {mean_loss.item()} != {full.item()}")
    for i, p in enumerate(net.parameters()):
        dist.all_reduce(p.grad)
        if not torch.allclose(p.grad / world, want[i], atol=1e-6):
            failures.append(f"grad {i} differs by {(p.grad / world - want[i]).abs().max().item()}")
    if rank == 0 and torch.allclose(local, full):
        failures.append("local loss equals global loss: the test is too weak")

    t = torch.randn(per_rank * world, 7)
    c = torch.zeros(1, 7)
    update_center(c, t[shard], 0.9)
    if not torch.allclose(c, 0.1 * t.mean(0, keepdim=True), atol=1e-6):
        failures.append("centre is not the mean over ranks")
    # one file per rank: two processes printing at once interleave their lines in torchrun's output
    with open(f"rank{rank}.result", "w") as handle:
        handle.write(("FAIL " + repr(failures)) if failures else "OK")
    dist.destroy_process_group()
    sys.exit(1 if failures else 0)
''')


def test_two_process_nt_xent_and_center_equal_single_process(run_two_ranks):
    results = run_two_ranks(WORKER, timeout=180)
    assert results == ["OK", "OK"], results
