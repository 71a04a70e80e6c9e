"""Short CPU runs on built-in `shapes`: each objective lowers its loss; DINO does not collapse."""

import math

import pytest
import torch

from helpers import NANO
from zir.data import make_loader, open_source
from zir.model import build_model


@pytest.fixture(scope="module")
def source():
    return open_source("shapes", split="train", n=128)


def run(source, objectives: dict, steps: int, lr: float = 1e-3, batches: int = 4, batch_size: int = 32, keep=None):
    """Train a nano ViT on a few fixed batches; returns the per-step metrics (and model and batches with `keep`)."""
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": objectives})
    loader = make_loader(source, model.view_plan(), batch_size, shuffle=False)
    fixed = [b for _, b in zip(range(batches), loader)]
    opt = torch.optim.AdamW(model.param_groups(0.05, base_lr=lr))
    history = []
    for step in range(steps):
        out = model(fixed[step % len(fixed)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(step, steps)
        history.append(out.metrics)
    if keep is not None:
        keep.update(model=model, batches=fixed)
    return history


def mean(history, key, part):
    """Mean of a metric over the first or last pass over the fixed batches."""
    rows = history[:4] if part == "first" else history[-4:]
    return sum(r[key] for r in rows) / len(rows)


def test_mae_lowers_its_loss(source):
    h = run(source, {"mae": {}}, 16)
    assert mean(h, "mae_loss", "last") < 0.8 * mean(h, "mae_loss", "first")


def test_simclr_lowers_its_loss(source):
    h = run(source, {"simclr": {}}, 24)
    assert mean(h, "simclr_loss", "last") < 0.9 * mean(h, "simclr_loss", "first")


def test_dino_learns_without_collapse(source):
    torch.manual_seed(0)
    got = {}
    cfg = {"local_views": 2, "out_dim": 512, "hidden_dim": 128, "bottleneck_dim": 64, "momentum": 0.9}
    h = run(source, {"dino": cfg}, 24, lr=5e-4, keep=got)
    model, batches = got["model"], got["batches"]
    # DINO's cross-entropy also holds the teacher's entropy, which centring moves while the run is short:
    # judge the student by its loss against the final teacher, before and after training
    model.eval()
    with torch.no_grad():
        trained = sum(model(b).loss.item() for b in batches)
        torch.manual_seed(0)
        fresh = build_model({"towers": NANO, "objectives": {"dino": cfg}})
        model.towers["image"].load_state_dict(fresh.towers["image"].state_dict())
        model.objectives["dino"].head.load_state_dict(fresh.objectives["dino"].head.state_dict())
        initial = sum(model(b).loss.item() for b in batches)
    assert trained < 0.9 * initial
    assert mean(h, "dino_kl", "last") < mean(h, "dino_kl", "first")
    log_k = math.log(512)
    for row in h[-4:]:
        assert row["dino_emb_std"] > 0.2  # 0 when every image maps to one embedding
        assert row["dino_teacher_entropy"] < 0.98 * log_k  # log K: uniform collapse (centring alone)
        assert row["dino_teacher_batch_entropy"] > math.log(4)  # 0: every image on one prototype (sharpening alone)


def test_ibot_koleo_lower_their_losses(source):
    head = {"out_dim": 256, "hidden_dim": 128, "bottleneck_dim": 64, "momentum": 0.9}
    h = run(source, {"ibot": head, "koleo": {"weight": 0.1}}, 16, lr=5e-4)
    assert mean(h, "ibot_loss", "last") < mean(h, "ibot_loss", "first")
    assert mean(h, "koleo_loss", "last") < mean(h, "koleo_loss", "first")
