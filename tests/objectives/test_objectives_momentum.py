"""BYOL and MoCo v3: the losses against the papers' pseudo-code, the momentum teacher through the model, sharing
`image_teacher` with DINO, beside MAE, the frozen patch projection, and the recipes through `zir train`."""

import math
import textwrap

import pytest
import torch

from helpers import NANO, first_batch
from zir.cli import main
from zir.data import open_source
from zir.errors import ConfigError
from zir.losses import byol_loss, moco_v3_loss
from zir.model import build_model

SMALL = {"hidden_dim": 32, "out_dim": 16, "pred_hidden_dim": 32}


@pytest.fixture(scope="module")
def source():
    return open_source("shapes", split="train", n=16)


def sgd_step(model, batch, lr=0.1, step=0, total=10):
    out = model(batch)
    model.zero_grad()
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    model.after_step(step, total)
    return out


# -- the losses --------------------------------------------------------------------------------------

def eq2(q, z):
    """BYOL Eq. 2 for one pair, element by element: || q/||q||_2 - z/||z||_2 ||_2^2."""
    qn = math.sqrt(sum(x * x for x in q))
    zn = math.sqrt(sum(x * x for x in z))
    return sum((a / qn - b / zn) ** 2 for a, b in zip(q, z))


def test_byol_loss_is_eq2_symmetrised_and_leaves_the_targets_without_gradient():
    p1 = torch.tensor([[1.0, 0.0], [3.0, 4.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 2.0], [3.0, 4.0]], requires_grad=True)  # orthogonal: 2; parallel: 0
    p2 = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    z1 = torch.tensor([[-2.0, -2.0], [0.0, 5.0]], requires_grad=True)  # opposite: 4, twice
    loss = byol_loss(p1, p2, z1, z2)
    assert loss.item() == pytest.approx((2 + 0) / 2 + (4 + 4) / 2, abs=1e-6)
    torch.manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 7) for _ in range(4))
    want = sum(eq2(p1[i].tolist(), z2[i].tolist()) + eq2(p2[i].tolist(), z1[i].tolist()) for i in range(5)) / 5
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx(want, rel=1e-5)
    p, z = p1.clone().requires_grad_(), z2.clone().requires_grad_()
    byol_loss(p, p, z, z).backward()
    assert z.grad is None and p.grad.abs().sum() > 0  # the target sits under a stop-gradient


def ctr(q, k, tau):
    """MoCo v3 Algorithm 1's ctr(q, k), written out: 2 tau * CrossEntropy(q k^T / tau, labels = range(N))."""
    q = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in q.tolist()]
    k = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in k.tolist()]
    total = 0.0
    for i, qi in enumerate(q):
        logits = [sum(a * b for a, b in zip(qi, kj)) / tau for kj in k]
        total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    return 2 * tau * total / len(q)


def test_moco_v3_loss_is_algorithm_1_written_out():
    torch.manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(6, 5) for _ in range(4))
    for tau in (0.2, 1.0):
        loss, acc = moco_v3_loss(q1, q2, k1, k2, tau)
        assert loss.item() == pytest.approx(ctr(q1, k2, tau) + ctr(q2, k1, tau), rel=1e-5)
        assert 0.0 <= acc.item() <= 1.0
    # each key equal to its query and orthogonal to the others: logits 1/tau on the diagonal, 0 elsewhere
    eye = torch.eye(4)
    loss, acc = moco_v3_loss(eye, eye, eye, eye, 0.5)
    assert loss.item() == pytest.approx(2 * (2 * 0.5) * math.log(1 + 3 * math.exp(-2)), rel=1e-5)
    assert acc.item() == 1.0
    q, k = q1.clone().requires_grad_(), k2.clone().requires_grad_()
    moco_v3_loss(q, q, k, k, 0.2)[0].backward()
    assert k.grad is None and q.grad.abs().sum() > 0  # the momentum keys get no gradient


MOCO_WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from zir.losses import moco_v3_loss

    torch.manual_seed(0)
    per_rank, world = 4, 2
    a, b = torch.randn(per_rank * world, 5), torch.randn(per_rank * world, 5)
    k1, k2 = torch.randn(per_rank * world, 6), torch.randn(per_rank * world, 6)

    def net():
        torch.manual_seed(1)
        return nn.Linear(5, 6)

    failures = []
    online = net()  # the global batch in one process, before the process group exists
    full, _ = moco_v3_loss(online(a), online(b), k1, k2, 0.2)
    full.backward()
    want = [p.grad.clone() for p in online.parameters()]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    online = net()
    shard = slice(rank * per_rank, (rank + 1) * per_rank)
    local, _ = moco_v3_loss(online(a[shard]), online(b[shard]), k1[shard], k2[shard], 0.2)
    local.backward()
    mean = local.detach().clone()
    dist.all_reduce(mean)
    if not torch.allclose(mean / world, full, atol=1e-6):
        failures.append(f"loss {(mean / world).item()} != {full.item()}")
    for i, p in enumerate(online.parameters()):
        dist.all_reduce(p.grad)
        if not torch.allclose(p.grad / world, want[i], atol=1e-6):
            failures.append(f"grad {i} differs by {(p.grad / world - want[i]).abs().max().item()}")
    if torch.allclose(local.detach(), full.detach()):
        failures.append("local loss equals the global one: the test is too weak")
    with open(f"rank{rank}.result", "w") as handle:
        handle.write(("FAIL " + repr(failures)) if failures else "OK")
    dist.destroy_process_group()
    sys.exit(1 if failures else 0)
''')


def test_moco_v3_negatives_are_every_ranks_keys(run_two_ranks):
    assert run_two_ranks(MOCO_WORKER, timeout=180) == ["OK", "OK"]


# -- through the model -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["byol", "moco_v3"])
def test_the_teacher_gets_no_gradient_and_follows_the_student_once_per_step(name, source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {name: {**SMALL, "momentum": 0.9}}})
    obj = model.objectives[name]
    assert list(model.teachers) == ["image_teacher"] and obj.teacher is model.teachers["image_teacher"]
    assert [f.tower for f in model.plan_forwards] == ["image", "image", "image_teacher", "image_teacher"]
    teacher, tower = model.teachers["image_teacher"].module, model.towers["image"]
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    head_before = [p.clone() for p in obj.teacher_head.parameters()]
    out = model(first_batch(model, source))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in [*teacher.parameters(), *obj.teacher_head.parameters()])
    assert all(p.grad is not None for p in [*obj.head.parameters(), *obj.predictor.parameters()])
    assert math.isfinite(out.metrics[f"{name}_loss"]) and out.metrics[f"{name}_emb_std"] > 0.1
    with torch.no_grad():
        for p in [*tower.parameters(), *obj.head.parameters()]:
            p.add_(1.0)
    model.after_step(0, 10)
    m = model.teachers["image_teacher"].momentum_at(0, 10)
    assert m == pytest.approx(0.9) and out.metrics[f"{name}_momentum"] == pytest.approx(0.9)
    student = dict(tower.named_parameters())
    for n, p in teacher.named_parameters():  # once: twice would give m^2
        assert torch.allclose(p, m * before[n] + (1 - m) * student[n], atol=1e-6), n
    for t, b, s in zip(obj.teacher_head.parameters(), head_before, obj.head.parameters()):
        assert torch.allclose(t, m * b + (1 - m) * s, atol=1e-6)


def test_the_target_projector_normalises_with_batch_statistics_in_training(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"byol": SMALL}})
    obj = model.objectives["byol"]
    bn = obj.teacher_head.net[1]
    assert obj.teacher_head.training and not model.teachers["image_teacher"].module.training
    model(first_batch(model, source))
    assert bn.num_batches_tracked.item() == 2  # one batch per view, as the papers' target networks run
    model.eval()
    assert not obj.teacher_head.training


def test_byol_beside_mae_trains_a_step(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"byol": {**SMALL, "weight": 0.5}, "mae": {"decoder_depth": 1}}})
    assert model.view_plan().global_views == 2 and len(model.plan_forwards) == 5  # mae's masked global_0 besides
    batch = first_batch(model, source)
    before = [p.clone() for p in model.towers["image"].parameters()]
    out = sgd_step(model, batch, lr=0.05)
    assert out.loss.item() == pytest.approx(0.5 * out.metrics["byol_loss"] + out.metrics["mae_loss"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.towers["image"].parameters()))
    with torch.no_grad():
        after = model(batch)
    assert after.metrics["byol_loss"] < out.metrics["byol_loss"] and after.metrics["mae_loss"] < out.metrics["mae_loss"]


def test_byol_and_dino_share_the_teacher_when_their_momenta_agree(source):
    dino = {"local_views": 0, "out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16}
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"byol": SMALL, "dino": dino}})
    assert list(model.teachers) == ["image_teacher"]
    assert model.objectives["byol"].teacher is model.objectives["dino"].teacher is model.teachers["image_teacher"]
    assert sum(f.tower == "image_teacher" for f in model.plan_forwards) == 2  # each teacher forward runs once
    out = sgd_step(model, first_batch(model, source))
    assert math.isfinite(out.loss.item()) and {"byol_loss", "dino_loss"} <= set(out.metrics)
    with pytest.raises(ConfigError, match=r"^model.objectives: byol and dino share the teacher image_teacher but ask for "
                                          r"momentum \(0.99, 1.0\) and \(0.996, 1.0\)") as err:
        build_model({"towers": NANO, "objectives": {"byol": {**SMALL, "momentum": 0.99}, "dino": dino}})
    assert "\n" not in str(err.value)


def test_freeze_patch_embed_leaves_the_patch_projection_unchanged(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"moco_v3": {**SMALL, "freeze_patch_embed": True}}})
    tower = model.towers["image"]
    frozen = {n: p.clone() for n, p in tower.patch_embed.named_parameters()}
    rest = {n: p.clone() for n, p in tower.named_parameters() if not n.startswith("patch_embed.")}
    assert set(frozen) == {"proj.weight", "proj.bias"}
    groups = model.param_groups(0.05, base_lr=1e-3)
    assert not any(p is q for g in groups for p in g["params"] for q in tower.patch_embed.parameters())
    batch = first_batch(model, source)
    for step in range(2):
        sgd_step(model, batch, step=step)
    assert all(torch.equal(p, frozen[n]) for n, p in tower.patch_embed.named_parameters())
    assert any(not torch.equal(p, rest[n]) for n, p in tower.named_parameters() if n in rest)
    teacher_proj = model.teachers["image_teacher"].module.patch_embed.proj.weight
    assert torch.allclose(teacher_proj, frozen["proj.weight"], atol=1e-6)  # the EMA of a constant stays put
    torch.manual_seed(0)
    trained = build_model({"towers": NANO, "objectives": {"moco_v3": SMALL}})  # off by default
    assert all(p.requires_grad for p in trained.towers["image"].patch_embed.parameters())


@pytest.mark.parametrize("tower, kind", [
    ({"model": "swin_micro_patch2_window4_32", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]}, "SwinTransformer"),
    ({"model": "vit_nano_patch4_32", "stem": "conv"}, "ViT with stem 'conv'"),
])
def test_freeze_patch_embed_is_refused_in_one_line_without_a_patch_projection(tower, kind):
    with pytest.raises(ConfigError) as err:
        build_model({"towers": {"image": tower}, "objectives": {"moco_v3": {**SMALL, "freeze_patch_embed": True}}})
    assert str(err.value) == (f"model.objectives.moco_v3: moco_v3 freeze_patch_embed: the {kind} tower 'image' has no "
                              "patch projection to freeze; expected a ViT tower with the patch stem (stem: patch)")


def test_momentum_objectives_refuse_a_text_tower_and_bad_settings():
    towers = {**NANO, "text": {"model": "text_nano"}}
    with pytest.raises(ConfigError, match=r"^model.objectives.byol: byol: the \w+ tower 'text' is a text tower; "
                                          r"byol needs an image tower$"):
        build_model({"towers": towers, "objectives": {"byol": {"tower": "text"}}})
    with pytest.raises(ConfigError, match=r"^model.objectives.moco_v3: moco_v3 temperature=0: expected > 0$"):
        build_model({"towers": NANO, "objectives": {"moco_v3": {"temperature": 0}}})
    with pytest.raises(ConfigError, match=r"freeze_patch_embed='yes': expected true or false$"):
        build_model({"towers": NANO, "objectives": {"moco_v3": {"freeze_patch_embed": "yes"}}})


# -- the recipes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["byol", "moco_v3"])
def test_the_recipe_trains_two_steps_through_the_cli(name, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", name, "train.steps=2", "data.options.n=256", "--out", str(run), "--no-progress"]) == 0
    assert "step 2/2" in capsys.readouterr().out
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and f"{name}_loss" in header and f"{name}_emb_std" in header
    losses = [float(r.split(",")[header.index(f"{name}_loss")]) for r in rows[1:]]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert any(p.name.startswith("step_") for p in (run / "checkpoints").iterdir())
