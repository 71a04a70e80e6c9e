"""VICReg, Barlow Twins and SimSiam: each loss against its paper's pseudo-code (written out again here, on fixed
tensors) and on cases small enough to check by hand; the objectives through build_model, alone and beside MAE;
the statistics over the global batch under two gloo processes; each recipe from the command line."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F

from helpers import NANO, first_batch, metrics_rows
from zir.cli import main
from zir.data import open_source
from zir.errors import ConfigError, ShapeError
from zir.losses import barlow_twins_loss, cross_correlation, simsiam_loss, vicreg_loss
from zir.losses.vicreg import covariance, invariance, variance
from zir.model import build_model
from zir.objectives import BarlowTwins, SimSiam, VICReg
from zir.objectives.base import create_objective
from zir.models import create_model

NAMES = ["vicreg", "barlow_twins", "simsiam"]


def pair(n=32, d=16, seed=0):
    """Two correlated 'views' (n, d) with unequal scales per dimension."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g) * torch.linspace(0.3, 2.0, d)
    return a, a + 0.5 * torch.randn(n, d, generator=g)


def hadamard_columns(n=8):
    """n x (n - 1) entries +-1: every column has mean 0, variance n / (n - 1) and is orthogonal to the others."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h[:, 1:]


def off_diag(m):
    return m - torch.diag(torch.diagonal(m))


# -- VICReg ------------------------------------------------------------------------------------------------
def vicreg_algorithm_1(z_a, z_b, lam=25.0, mu=25.0, nu=1.0):
    """The paper's Algorithm 1 (Bardes et al. 2022), as printed."""
    N, D = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
    std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
    std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_z_a = (z_a.T @ z_a) / (N - 1)
    cov_z_b = (z_b.T @ z_b) / (N - 1)
    cov_loss = off_diag(cov_z_a).pow(2).sum() / D + off_diag(cov_z_b).pow(2).sum() / D
    return lam * sim_loss + mu * std_loss + nu * cov_loss, (sim_loss, std_loss, cov_loss)


def test_vicreg_equals_the_papers_algorithm_1():
    z1, z2 = pair()
    z1, z2 = 0.5 * z1, 0.5 * z2  # some dimensions under the std target, so the hinge is active
    loss, terms = vicreg_loss(z1, z2)
    want, (sim, std, cov) = vicreg_algorithm_1(z1, z2)
    assert 0 < float(terms["variance"]) and 0 < float(terms["covariance"])
    assert torch.allclose(loss, want, rtol=1e-6)
    for got, exp in zip((terms["invariance"], terms["variance"], terms["covariance"]), (sim, std, cov)):
        assert torch.allclose(got, exp, rtol=1e-6)
    loss, _ = vicreg_loss(z1, z2, sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)
    assert torch.allclose(loss, vicreg_algorithm_1(z1, z2, 2.0, 3.0, 0.5)[0], rtol=1e-6)


def test_vicreg_by_hand():
    z = hadamard_columns(8)  # (8, 7): unit-or-more variance, decorrelated
    loss, terms = vicreg_loss(z, z.clone())
    assert float(terms["invariance"]) == 0.0 and float(terms["variance"]) == 0.0
    assert float(terms["covariance"]) == pytest.approx(0.0, abs=1e-12) and float(loss) == pytest.approx(0.0, abs=1e-10)
    # collapsed: every embedding the same, each view's hinge at its maximum 1 - sqrt(eps), no covariance
    loss, terms = vicreg_loss(torch.full((8, 5), 3.0), torch.full((8, 5), 3.0))
    assert float(terms["variance"]) == pytest.approx(2 * (1 - 0.01)) and float(terms["covariance"]) == 0.0
    assert float(loss) == pytest.approx(25 * 1.98)
    # two perfectly correlated dimensions of variance 1: one covariance of 1 on each side of the diagonal, / D = 2
    x = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]) * math.sqrt(3 / 4)  # unbiased variance 1
    assert float(covariance(torch.cat([x, x], 1))) == pytest.approx(1.0)  # (1 + 1) / 2
    assert float(variance(2 * x, std_target=1.0)) == 0.0  # std 2 > 1: the hinge is off
    assert float(invariance(torch.zeros(2, 3), torch.full((2, 3), 2.0))) == 4.0


# -- Barlow Twins ------------------------------------------------------------------------------------------
def barlow_algorithm_1(z_a, z_b, lambda_=5e-3, unbiased=True):
    """The paper's Algorithm 1 (Zbontar et al. 2021), as printed (`std(0)`, torch's unbiased by default)."""
    N, D = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0, unbiased=unbiased)
    z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0, unbiased=unbiased)
    c = torch.mm(z_a_norm.T, z_b_norm) / N
    c_diff = (c - torch.eye(D)).pow(2)
    c_diff = torch.diag(torch.diagonal(c_diff)) + lambda_ * off_diag(c_diff)
    return c_diff.sum(), c


def test_barlow_twins_equals_the_papers_algorithm_1_with_eq_2s_normalisation():
    z1, z2 = pair()
    loss, terms = barlow_twins_loss(z1, z2, eps=0.0)
    want, _ = barlow_algorithm_1(z1, z2, unbiased=False)  # Eq. (2) and the official code's BatchNorm1d
    assert torch.allclose(loss, want, rtol=1e-5)
    # Algorithm 1's unbiased std(0) shrinks C by (N - 1) / N, nothing else
    _, c_printed = barlow_algorithm_1(z1, z2)
    assert torch.allclose(cross_correlation(z1, z2, eps=0.0) * (31 / 32), c_printed, atol=1e-6)
    assert float(terms["on_diag"]) + 5e-3 * float(terms["off_diag"]) == pytest.approx(float(loss), rel=1e-6)


def test_barlow_twins_equals_the_official_codes_batch_norm():
    z1, z2 = pair(seed=1)
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).train()  # the official code: self.bn, eps 1e-5
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = off_diag(c).pow(2).sum()
    loss, _ = barlow_twins_loss(z1, z2, lambd=0.0051)
    assert torch.allclose(loss, on + 0.0051 * off, rtol=1e-5)


def test_barlow_twins_by_hand():
    z = hadamard_columns(8)
    loss, terms = barlow_twins_loss(z, z.clone(), eps=0.0)  # decorrelated, standardised: C = I
    assert float(terms["off_diag"]) == pytest.approx(0.0, abs=1e-10) and float(loss) == pytest.approx(0.0, abs=1e-10)
    _, terms = barlow_twins_loss(z, -z, eps=0.0)  # C = -I: each (1 - C_ii)^2 = 4
    assert float(terms["on_diag"]) == pytest.approx(4 * 7)
    _, terms = barlow_twins_loss(torch.ones(8, 5), torch.ones(8, 5))  # collapsed: nothing to correlate, C = 0
    assert (float(terms["on_diag"]), float(terms["off_diag"])) == (5.0, 0.0)
    with pytest.raises(ShapeError, match="at least 2"):
        barlow_twins_loss(torch.ones(1, 5), torch.ones(1, 5))


# -- SimSiam -----------------------------------------------------------------------------------------------
def simsiam_algorithm_1(p1, p2, z1, z2):
    """The paper's Algorithm 1 (Chen & He 2021): D(p, z) with z detached, symmetrised."""
    def D(p, z):
        z = z.detach()
        p = F.normalize(p, dim=1)
        z = F.normalize(z, dim=1)
        return -(p * z).sum(dim=1).mean()
    return D(p1, z2) / 2 + D(p2, z1) / 2


def test_simsiam_equals_the_papers_algorithm_1_and_stops_the_gradient():
    (p1, p2), (z1, z2) = pair(seed=2), pair(seed=3)
    for t in (p1, p2, z1, z2):
        t.requires_grad_(True)
    loss = simsiam_loss(p1, p2, z1, z2)
    assert torch.allclose(loss, simsiam_algorithm_1(p1, p2, z1, z2), rtol=1e-6)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_simsiam_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(simsiam_loss(z, z, z, z)) == pytest.approx(-1.0)
    assert float(simsiam_loss(-z, -z, z, z)) == pytest.approx(1.0)
    assert float(simsiam_loss(z.flip(1), z.flip(1), z, z)) == pytest.approx(0.0)  # orthogonal pairs


# -- the objectives through build_model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def source():
    return open_source("shapes", split="train", n=16)


SMALL = {"vicreg": {"hidden_dim": 48, "out_dim": 40}, "barlow_twins": {"hidden_dim": 48, "out_dim": 40},
         "simsiam": {"hidden_dim": 48, "out_dim": 40, "pred_dim": 10}}
METRICS = {"vicreg": {"invariance", "variance", "covariance", "emb_std"},
           "barlow_twins": {"on_diag", "off_diag", "emb_std"}, "simsiam": {"emb_std"}}


def step(objectives, source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": objectives})
    batch = first_batch(model, source)
    out = model(batch)
    out.loss.backward()
    return model, out


@pytest.mark.parametrize("name", NAMES)
def test_a_step_alone_reaches_the_tower(name, source):
    model, out = step({name: SMALL[name]}, source)
    plan = model.view_plan()
    assert plan.pipeline == "byol" and plan.view_names() == ["global_0", "global_1"]
    assert sorted((f.view.name, f.mask) for f in model.plan_forwards) == [("global_0", ""), ("global_1", "")]
    assert math.isfinite(float(out.loss.detach())) and set(out.terms) == {f"{name}_loss"}
    assert {k[len(name) + 1:] for k in out.metrics if k.startswith(name + "_")} == METRICS[name] | {"loss"}
    assert 0 < out.metrics[f"{name}_emb_std"] < 2
    grads = [p.grad for p in model.towers["image"].parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    proj = model.objectives[name].projector
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in proj.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_a_weighted_term_beside_mae(name, source):
    model, out = step({"mae": {"weight": 1.0}, name: {"weight": 0.5, **SMALL[name]}}, source)
    assert set(out.terms) == {"mae_loss", f"{name}_loss"}
    total = out.terms["mae_loss"] + 0.5 * out.terms[f"{name}_loss"]
    assert torch.allclose(out.loss.detach(), total) and math.isfinite(float(out.loss.detach()))
    assert model.view_plan().pipeline == "byol"  # stronger than MAE's crop-and-flip, weaker than DINO's
    assert len(model.plan_forwards) == 3  # the two views, and MAE's masked global_0
    blocks = model.towers["image"].blocks
    assert blocks[0].attn.qkv.weight.grad is not None and torch.isfinite(blocks[0].attn.qkv.weight.grad).all()


def test_the_heads_follow_the_papers():
    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    width = towers["image"].embed_dim
    for cls in (VICReg, BarlowTwins):  # Linear-BN-ReLU twice, then a plain linear layer
        kinds = [type(m).__name__ for m in cls(towers).projector.net]
        assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
        assert cls(towers).projector.net[0].in_features == width
    sim = SimSiam(towers)
    assert type(sim.projector.net[-1]).__name__ == "BatchNorm1d" and not sim.projector.net[-1].affine
    assert [m.out_features for m in sim.predictor.net if isinstance(m, torch.nn.Linear)] == [128, 512]


@pytest.mark.parametrize("name, settings, match", [
    ("vicreg", {"views": ["global_0", "global_0"]}, r"^vicreg views=.*expected two different view names$"),
    ("vicreg", {"std_coeff": -1.0}, r"^vicreg std_coeff=-1.0: expected a number >= 0$"),
    ("vicreg", {"eps": "1e-4"}, r"^vicreg eps='1e-4': expected a number > 0$"),
    ("barlow_twins", {"lambd": -0.1}, r"^barlow_twins lambd=-0.1: expected a number >= 0$"),
    ("barlow_twins", {"out_dim": 0}, r"^barlow_twins out_dim=0: expected an integer >= 1$"),
    ("simsiam", {"pred_dim": 0}, r"^simsiam pred_dim=0: expected an integer >= 1$"),
    ("simsiam", {"views": "global_0"}, r"^simsiam views='global_0': expected two different view names$"),
])
def test_bad_settings_are_one_line_errors(name, settings, match):
    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    with pytest.raises(ConfigError, match=match):
        create_objective(name, towers, **settings)


# -- the global batch under torch.distributed -------------------------------------------------------------
WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from zir.losses import barlow_twins_loss, vicreg_loss

    torch.manual_seed(0)
    per_rank, world = 6, 2
    a, b = torch.randn(per_rank * world, 5), torch.randn(per_rank * world, 5)
    failures, expected = [], {}
    LOSSES = {"vicreg": vicreg_loss, "barlow": barlow_twins_loss}

    def net():
        torch.manual_seed(1)
        return nn.Linear(5, 4)

    for name, fn in LOSSES.items():  # before the process group exists: the global batch in one process
        full_net = net()
        full, _ = fn(full_net(a), full_net(b))
        expected[name] = full.detach(), torch.autograd.grad(full, list(full_net.parameters()))

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    shard = slice(rank * per_rank, (rank + 1) * per_rank)
    for name, fn in LOSSES.items():
        full, want = expected[name]
        local_net = net()
        local, _ = fn(local_net(a[shard]), local_net(b[shard]))
        grads = torch.autograd.grad(local, list(local_net.parameters()))
        if not torch.allclose(local, full, rtol=1e-5):
            failures.append(f"{name} loss {local.item()} != {full.item()}")
        for i, g in enumerate(grads):
            g = g.clone()
            dist.all_reduce(g)  # DDP's average
            if not torch.allclose(g / world, want[i], rtol=1e-4, atol=1e-6):
                failures.append(f"{name} grad {i} differs by {(g / world - want[i]).abs().max().item()}")
    with open(f"rank{rank}.result", "w") as handle:
        handle.write(("FAIL " + repr(failures)) if failures else "OK")
    dist.destroy_process_group()
    sys.exit(1 if failures else 0)
''')


def test_vicreg_and_barlow_twins_take_their_statistics_over_the_global_batch(run_two_ranks):
    assert run_two_ranks(WORKER, timeout=180) == ["OK", "OK"]


def test_the_global_batch_differs_from_a_rank_s_shard():
    # what the two-rank test would miss if the gather did nothing: a shard's loss is not the batch's
    torch.manual_seed(0)
    a, b = torch.randn(12, 5), torch.randn(12, 5)
    for fn in (vicreg_loss, barlow_twins_loss):
        assert not torch.allclose(fn(a[:6], b[:6])[0], fn(a, b)[0], rtol=1e-3)


# -- the recipes from the command line --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_recipe_trains_from_the_command_line(name, tmp_path):
    run = tmp_path / "run"
    assert main(["train", name, "train.steps=2", "data.options.n=256", "train.threads=1", "--out", str(run),
                 "--no-progress"]) == 0
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r[f"{name}_loss"])) and float(r[f"{name}_emb_std"]) > 0 for r in rows)
