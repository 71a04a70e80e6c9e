"""Schedules, layer-wise lr decay through the model's param groups, and run length from epochs."""

from __future__ import annotations

import math

import pytest

from helpers import recipe
from zir.config import from_dict, load_config
from zir.train import Trainer, lr_factor


def test_warmup_then_cosine_linear_and_constant():
    assert [lr_factor(s, 10, 0.2) for s in (0, 1)] == [0.5, 1.0]  # warm-up reaches the peak at its last step
    assert lr_factor(2, 10, 0.2) == 1.0
    assert lr_factor(6, 10, 0.2) == pytest.approx(0.5)  # half-way through the cosine
    assert 0 < lr_factor(9, 10, 0.2) < 0.05  # the last step still learns a little
    assert lr_factor(9, 10, 0.2, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(6, 10, 0.2, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 10, 0.0, "constant") == 1.0


def test_layer_decay_scales_each_group_and_the_schedule_moves_them_together(tmp_path):
    cfg = load_config("mae", ["model.towers.image.model=vit_nano_patch4_32", "optim.layer_decay=0.5",
                                           "optim.lr=1e-3", "train.steps=10", "optim.warmup=0.2", "data.options.n=64"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    groups = trainer.optimizer.param_groups
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.125, 0.25, 0.5, 1.0]  # nano: embeddings, 2 blocks, then the final norm and the heads
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
    factor = trainer.schedule.set(0)
    assert factor == 0.5
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"] * 0.5)


def test_epochs_set_the_number_of_steps(tmp_path):
    raw = recipe()
    raw["train"] = {"epochs": 2, "threads": 1}
    raw["data"]["options"]["n"] = 64
    trainer = Trainer(from_dict(raw), tmp_path / "run", progress=False)  # 64 samples, batches of 16
    assert trainer.total_steps == 8
