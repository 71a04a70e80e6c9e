"""Swin as the image tower of SimCLR, DINO (multi-crop), SimMIM and CLIP; SimMIM on Swin and on a plain ViT."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import NANO, TEXT_NANO, first_batch
from zir.config import load_config
from zir.data import MaskSpec, load_tokenizer, open_source
from zir.data.masking import random_mask, upsample_mask
from zir.errors import ConfigError
from zir.model import build_model
from zir.objectives.simmim import default_mask_patch_size, pixel_mask
from zir.recipes import RECIPES_DIR as CONFIGS, TOKENIZERS_DIR
from zir.train import train

# two stages of one block: stride 4, an 8x8 last-stage map at 32 px; the same code path as the zoo's Swins
SWIN = {"model": "swin_micro_patch2_window4_32", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]}


@pytest.fixture(scope="module")
def source():
    return open_source("shapes", split="train", n=16)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZERS_DIR / "shapes.json")


def overfit(model, batch, steps, lr):
    """Train on one fixed batch; the per-step losses."""
    opt = torch.optim.AdamW(model.param_groups(0.0, base_lr=lr))
    losses = []
    for step in range(steps):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(step, steps)
        losses.append(out.loss.item())
    assert all(math.isfinite(v) for v in losses)
    return losses


def mean(values):
    return sum(values) / len(values)


# -- SimCLR, DINO, CLIP with a Swin image tower --------------------------------------------------------
def test_simclr_with_a_swin_tower_overfits_a_batch(source):
    torch.manual_seed(0)
    model = build_model({"towers": {"image": SWIN}, "objectives": {"simclr": {"hidden_dim": 64, "out_dim": 32}}})
    losses = overfit(model, first_batch(model, source), 20, 3e-3)
    assert mean(losses[-4:]) < 0.7 * mean(losses[:4])


def test_dino_multi_crop_with_a_swin_tower(source):
    torch.manual_seed(0)
    # a fixed teacher (momentum 1) and centre (momentum 0: the batch's mean from the first step on) give the
    # student fixed targets on one batch, so its cross-entropy must fall
    cfg = {"local_views": 2, "out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32, "freeze_last_layer": 0.0,
           "momentum": 1.0, "center_momentum": 0.0}
    model = build_model({"towers": {"image": SWIN}, "objectives": {"dino": cfg}})
    plan = model.view_plan()
    # DINO's 96/224 of 32 px rounds to 14 px, which this Swin cannot take (7x7 patches do not halve):
    # the plan picks the nearest side the merges and windows divide
    assert (plan.size, plan.local_size, plan.local_views) == (32, 16, 2)
    batch = first_batch(model, source)
    assert batch.views["local_0"].shape == (8, 3, 16, 16)
    cache = model.encode(batch)
    assert {tuple(v.shape) for v in cache.values()} == {(8, 64, 32), (8, 16, 32)}  # 8x8 and 4x4 last-stage maps
    losses = overfit(model, batch, 20, 1e-3)
    assert mean(losses[-4:]) < 0.8 * mean(losses[1:5])  # step 0 is scored against the zero centre


def test_clip_with_a_swin_image_tower_overfits_a_batch(source, tokenizer):
    torch.manual_seed(0)
    model = build_model({"towers": {"image": SWIN, "text": TEXT_NANO}, "objectives": {"clip": {}}})
    batch = first_batch(model, source, tokenizer=tokenizer)
    losses = overfit(model, batch, 20, 3e-3)
    assert mean(losses[-4:]) < 0.5 * mean(losses[:4])


def test_flip_masking_is_refused_for_swin(tokenizer):
    with pytest.raises(ConfigError, match="clip: keep=0.5: the SwinTransformer image tower needs every patch"):
        build_model({"towers": {"image": SWIN, "text": TEXT_NANO}, "objectives": {"clip": {"keep": 0.5}}})


def test_local_crops_the_swin_windows_cannot_take_fail_naming_the_field(tmp_path):
    overrides = ["model.towers.image.model=swin_micro_patch2_window4_32", "data.plan.local_size=12",
                 "train.steps=1", "data.batch_size=4", "data.options.n=8", "train.threads=1"]
    cfg = load_config(CONFIGS / "dino.yaml", overrides)
    with pytest.raises(ConfigError, match=r"data\.plan\.local_size=12: .*e\.g\. data\.plan\.local_size=16"):
        train(cfg, tmp_path / "run", progress=False)
    model = build_model({"towers": {"image": SWIN}, "objectives": {"dino": {"local_views": 2, "out_dim": 64}}})
    plan = model.view_plan()
    plan.size = 36  # an 18x18 patch grid: 4x4 windows do not tile it
    with pytest.raises(ConfigError, match=r"data\.plan\.size=36: .*4x4 window.*e\.g\. data\.plan\.size=32"):
        model.check_plan(plan)


# -- SimMIM ----------------------------------------------------------------------------------------------
def test_simmim_mask_patches_are_squares_of_tower_patches(source):
    assert default_mask_patch_size(192, 4) == 32  # SimMIM's own setting
    assert default_mask_patch_size(224, 16) == 32 and default_mask_patch_size(32, 2) == 4
    coarse = random_mask(3, (8, 8), 0.6, seed=1)
    fine = upsample_mask(coarse, 2)
    assert fine.grid == (16, 16) and fine.keep.shape == (3, 256 - 4 * 38) and fine.ratio == pytest.approx(38 / 64)
    blocks = fine.mask.reshape(3, 8, 2, 8, 2)
    assert torch.equal(blocks.all(dim=(2, 4)), blocks.any(dim=(2, 4)))  # each 2x2 block hidden whole or not at all
    assert torch.equal(blocks[:, :, 0, :, 0].reshape(3, 64), coarse.mask)
    model = build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"simmim": {}}})
    plan = model.view_plan()
    assert (plan.masks["global_0"], plan.patch_size) == ((MaskSpec("mask", 0.6, "random", 4),), 2)
    mask = first_batch(model, source).mask("global_0")
    assert mask.mask.shape == (8, 256) and mask.ratio == pytest.approx(38 / 64)


def test_simmim_on_swin_overfits_and_scores_only_hidden_pixels(source):
    torch.manual_seed(0)
    model = build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"simmim": {}}})
    batch = first_batch(model, source)
    losses = overfit(model, batch, 30, 3e-3)
    assert mean(losses[-4:]) < 0.6 * mean(losses[:4])

    obj, tower = model.objectives["simmim"], model.towers["image"]
    model.eval()
    images, mask = batch.views["global_0"], batch.mask("global_0").mask
    with torch.no_grad():
        pred = obj.predict(tower.forward_tokens(images, mask=mask), images.shape[-2:])
        assert pred.shape == images.shape
        loss = obj.loss(images, pred, mask)
        hidden = pixel_mask(mask, (16, 16), 2).bool().expand_as(images)
        # the target's visible pixels do not count ...
        assert obj.loss(torch.where(hidden, images, images + 5.0), pred, mask) == loss
        # ... its hidden pixels do, as the mean absolute error over them
        assert obj.loss(torch.where(hidden, images + 1.0, images), pred, mask) != loss
        assert loss == pytest.approx(((pred - images).abs()[hidden]).mean().item(), rel=1e-5)


def test_swin_masked_positions_come_from_the_mask_token_not_the_pixels(source):
    torch.manual_seed(0)
    model = build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"simmim": {}}}).eval()
    obj, tower = model.objectives["simmim"], model.towers["image"]
    batch = first_batch(model, source, batch_size=2)
    images, mask = batch.views["global_0"], batch.mask("global_0").mask
    hidden = pixel_mask(mask, (16, 16), 2).bool().expand_as(images)
    with torch.no_grad():
        out = tower.forward_tokens(images, mask=mask)
        # the tower never sees hidden pixels ...
        assert torch.equal(tower.forward_tokens(torch.where(hidden, torch.randn_like(images), images), mask=mask), out)
        assert not torch.equal(tower.forward_tokens(images), out)
        # ... but its mask token: 4 px mask squares are exactly the stride-4 last-stage positions
        square = mask.reshape(2, 8, 2, 8, 2)[:, :, 0, :, 0].reshape(2, 64)
        tower.mask_token.add_(torch.randn_like(tower.mask_token))  # not a constant: LayerNorms remove those
        changed = (tower.forward_tokens(images, mask=mask) - out).abs().amax(dim=-1) > 1e-4
    assert changed[square].all()
    assert square.sum() == 2 * 38


def test_simmim_on_a_plain_vit_uses_the_towers_mask_token(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"simmim": {}}})
    obj, tower = model.objectives["simmim"], model.towers["image"]
    assert tower.has_mask_token and obj.stride == 4 and obj.mask_patch_size == 4
    assert "towers.image.mask_token" in {n for g in model.param_groups(0.05) if g["weight_decay"] == 0
                                         for n in g["names"]}
    batch = first_batch(model, source)
    images, mask = batch.views["global_0"], batch.mask("global_0").mask
    with torch.no_grad():
        out = tower.forward_tokens(images, mask=mask)
        assert out.shape == (8, 1 + 64, 64)  # the CLS token and every patch position
        token = tower.mask_token.clone()
        tower.mask_token.add_(torch.randn_like(token))
        changed = (tower.forward_tokens(images, mask=mask) - out)[:, 1:].abs().amax(dim=-1) > 1e-4
        tower.mask_token.copy_(token)
    assert changed[mask].all()
    losses = overfit(model, batch, 20, 3e-3)
    assert mean(losses[-4:]) < 0.6 * mean(losses[:4])


def test_simmim_config_errors():
    with pytest.raises(ConfigError, match=r"has_mask_token is False\); set model\.towers\.image\.mask_token: true"):
        build_model({"towers": {"image": {**SWIN, "mask_token": False}}, "objectives": {"simmim": {}}})
    assert build_model({"towers": {"image": SWIN}, "objectives": {"simmim": {}}}).towers["image"].has_mask_token
    with pytest.raises(ConfigError, match="mask_patch_size=3"):
        build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"simmim": {"mask_patch_size": 3}}})
    with pytest.raises(ConfigError, match="mask_ratio"):
        build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"simmim": {"mask_ratio": 1.0}}})
    model = build_model({"towers": {"image": {**SWIN, "mask_token": True}},
                         "objectives": {"simmim": {"mask_patch_size": 12}}})
    with pytest.raises(ConfigError, match="model.objectives.simmim: .*patch_size=12: expected a divisor of size=32"):
        model.view_plan()


def test_mae_and_ibot_refuse_a_swin_tower():
    with pytest.raises(ConfigError, match="mae: the SwinTransformer tower 'image' cannot drop patches.*simmim"):
        build_model({"towers": {"image": {**SWIN, "mask_token": True}}, "objectives": {"mae": {}}})
    with pytest.raises(ConfigError, match="ibot: the SwinTransformer tower 'image' outputs one token per 4x4 pixels.*simmim"):
        build_model({"towers": {"image": SWIN}, "objectives": {"ibot": {}}})
