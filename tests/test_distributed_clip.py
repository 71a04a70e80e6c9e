"""Two gloo processes give the same CLIP/SigLIP loss and gradients as one process on the global batch."""

import os
import subprocess
import sys
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


def test_two_process_clip_and_siglip_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    results = [(tmp_path / f"rank{r}.result").read_text() for r in (0, 1)]
    assert results == ["OK", "OK"], (results, out[-3000:])
