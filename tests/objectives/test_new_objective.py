"""docs/architecture.md's promise, kept: a new objective is one class and one `register_objective` line. Nothing in
the model, the data or the trainer learns its name; its views, forwards and EMA teacher follow from what it declares."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import NANO, first_batch
from zir.data import open_source
from zir.model import build_model
from zir.objectives import OBJECTIVES, Loss, register_objective
from zir.objectives.heads import MLPHead
from zir.objectives.siamese import MomentumSiamese


class NegativeCosine(MomentumSiamese):
    """A BYOL-like objective written outside zir: the online prediction against the target's projection, by cosine."""

    name = "negative_cosine"

    def __init__(self, towers, tower: str = "image", dim: int = 16, momentum: float = 0.99, final_momentum: float = 1.0):
        super().__init__(towers, tower, momentum, final_momentum)
        self.distil_head(MLPHead(self.tower.embed_dim, 32, dim))
        self.predictor = MLPHead(dim, 32, dim)

    def forward(self, batch, features) -> Loss:
        (p1, p2), (z1, z2), metrics = self.predictions_and_targets(features)
        return Loss(-(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2, metrics)


register_objective("negative_cosine", NegativeCosine)


def test_a_new_objective_is_one_class_and_one_registry_line():
    assert OBJECTIVES["negative_cosine"] is NegativeCosine
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {
        "negative_cosine": {}, "dino": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "local_views": 0,
                                        "momentum": 0.99}}})
    new, dino = model.objectives["negative_cosine"], model.objectives["dino"]
    assert list(model.teachers) == ["image_teacher"] and new.teacher is dino.teacher  # built once, by the model, shared
    plan = model.view_plan()
    assert plan.global_views == 2 and plan.pipeline in ("byol", "dino")
    batch = first_batch(model, open_source("shapes", split="train", n=8), 4)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and "negative_cosine_loss" in out.terms
    assert model.towers["image"].patch_embed.proj.weight.grad.abs().sum() > 0
    before = [p.clone() for p in model.teachers["image_teacher"].parameters()]
    with torch.no_grad():
        for p in model.towers["image"].parameters():
            p.add_(0.1)
    model.after_step(0, 10)  # the model moves the teacher once, whoever declared it
    moved = [not torch.equal(a, b) for a, b in zip(before, model.teachers["image_teacher"].parameters())]
    assert all(moved)


def test_the_trainer_trains_it_from_a_recipe_unchanged(tmp_path, capsys):
    import yaml

    from zir.cli import main

    raw = {"name": "negative_cosine", "model": {"towers": NANO, "objectives": {"negative_cosine": {}}},
           "data": {"source": "shapes", "batch_size": 4, "options": {"n": 8, "size": 32}},
           "train": {"steps": 2, "threads": 1, "precision": "fp32"}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "step 2/2" in capsys.readouterr().out
