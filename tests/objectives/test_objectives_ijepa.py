"""I-JEPA: the loss against the paper's Eq. (1) and the released code's form (written out again here, on fixed
tensors); the target and context masks through the view plan; the context encoder, EMA target encoder and
predictor through build_model; beside MAE and DINO-family teachers; the recipe, and the unified recipe with an
`ijepa` term, through `zir train`."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import NANO, first_batch, metrics_rows
from zir.cli import main
from zir.data import open_source
from zir.errors import ConfigError
from zir.losses import ijepa_loss
from zir.model import build_model
from zir.objectives import IJEPA
from zir.objectives.base import create_objective
from zir.models import create_model

SMALL = {"predictor_depth": 1}


@pytest.fixture(scope="module")
def source():
    return open_source("shapes", split="train", n=16)


def sgd_step(model, batch, lr=0.05, step=0, total=10):
    out = model(batch)
    model.zero_grad()
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    model.after_step(step, total)
    return out


# -- the loss ----------------------------------------------------------------------------------------

def layer_norm_by_hand(row, eps=1e-5):
    """The code's F.layer_norm(h, (D,)) on one patch: subtract the mean, divide by sqrt(biased variance + eps)."""
    mean = sum(row) / len(row)
    var = sum((x - mean) ** 2 for x in row) / len(row)
    return [(x - mean) / math.sqrt(var + eps) for x in row]


def smooth_l1_by_hand(a, b, beta=1.0):
    d = abs(a - b)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def eq1(pred_blocks, target_blocks):
    """Eq. (1) of the paper: 1/M sum over the M blocks of sum over the block's patches of ||s_hat - s||_2^2."""
    total = 0.0
    for pred, target in zip(pred_blocks, target_blocks):
        total += sum(sum((p - t) ** 2 for p, t in zip(pp, tt)) for pp, tt in zip(pred, target))
    return total / len(pred_blocks)


def test_the_loss_is_the_released_codes_smooth_l1_against_layer_normed_targets():
    pred = torch.tensor([[[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.5]],
                         [[0.0, 0.2, 0.1, -0.4], [2.0, -2.0, 0.0, 1.5]]])
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 5.0, 2.0]],
                           [[0.3, 0.3, 0.9, -0.6], [10.0, -4.0, 1.0, 1.0]]])
    diffs, terms = [], []
    for b in range(2):
        for m in range(2):
            normed = layer_norm_by_hand(target[b, m].tolist())
            diffs += [abs(p - t) for p, t in zip(pred[b, m].tolist(), normed)]
            terms += [smooth_l1_by_hand(p, t) for p, t in zip(pred[b, m].tolist(), normed)]
    assert min(diffs) < 1 < max(diffs)  # both branches of the Huber loss are used
    assert ijepa_loss(pred, target).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    # a prediction equal to the normalised target costs nothing, whatever the target's scale and offset
    t = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    normed = torch.tensor([[layer_norm_by_hand(r) for r in img] for img in t.tolist()])
    assert ijepa_loss(normed, 7.0 * t + 3.0).item() == pytest.approx(0.0, abs=1e-8)


def test_mse_is_eq1_over_patches_per_block_and_width():
    g = torch.Generator().manual_seed(1)
    blocks, per_block, width = 4, 3, 6
    pred = torch.randn(1, blocks * per_block, width, generator=g)
    target = torch.randn(1, blocks * per_block, width, generator=g)
    split = lambda x: [x[0, i * per_block:(i + 1) * per_block].tolist() for i in range(blocks)]  # noqa: E731
    want = eq1(split(pred), split(target)) / (per_block * width)
    assert ijepa_loss(pred, target, "mse", normalize=False).item() == pytest.approx(want, rel=1e-6)
    normed = torch.tensor([[layer_norm_by_hand(r) for r in target[0].tolist()]])
    want = eq1(split(pred), split(normed)) / (per_block * width)
    assert ijepa_loss(pred, target, "mse").item() == pytest.approx(want, rel=1e-5)


def test_the_targets_get_no_gradient_and_bad_input_is_refused():
    pred, target = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 4, requires_grad=True)
    ijepa_loss(pred, target).backward()
    assert target.grad is None and pred.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"^ijepa loss='l1': expected one of smooth_l1, mse$"):
        ijepa_loss(pred, target, "l1")
    with pytest.raises(Exception, match=r"predictions \(2, 3, 4\) and targets \(2, 2, 4\) differ in shape"):
        ijepa_loss(pred, target[:, :2])


# -- masks and the plan -------------------------------------------------------------------------------

def test_the_plan_asks_for_targets_and_a_context_that_avoids_them(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"ijepa": {**SMALL, "target_ratio": 0.4, "context_ratio": 0.5}}})
    plan = model.view_plan()
    assert plan.view_names() == ["image"] and plan.pipeline == "light"
    assert [(m.name, m.generator, m.ratio, m.blocks, m.outside) for m in plan.masks["image"]] == [
        ("jepa_targets", "jepa_targets", 0.4, 4, ""), ("jepa_context", "jepa_context", 0.5, 4, "jepa_targets")]
    assert [(f.tower, f.view.name, f.mask) for f in model.plan_forwards] == [
        ("image", "image", "jepa_context"), ("image_teacher", "image", "")]
    batch = first_batch(model, source)
    targets, context = batch.mask("image", "jepa_targets"), batch.mask("image", "jepa_context")
    n = 64  # the 8x8 patch grid of a 32-pixel view
    assert targets.grid == context.grid == (8, 8)
    assert targets.hidden.shape == (8, round(0.4 * n)) and context.keep.shape == (8, n - round(0.5 * n))
    assert not (~context.mask & targets.mask).any()  # the context never sees a target patch
    # the predictions: one per target patch, the tower's width
    obj = model.objectives["ijepa"]
    tokens = model.towers["image"].forward_tokens(batch.views["image"], context.keep)
    assert tokens.shape == (8, 1 + 32, 64)  # the CLS token and the context patches only
    assert obj.predict(tokens, context.keep, targets.hidden, context.grid).shape == (8, 26, 64)


def test_a_step_trains_the_context_encoder_and_predictor_and_moves_the_teacher_once(source):
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"ijepa": {**SMALL, "momentum": 0.9}}})
    obj = model.objectives["ijepa"]
    assert list(model.teachers) == ["image_teacher"] and obj.teacher is model.teachers["image_teacher"]
    teacher, tower = model.teachers["image_teacher"].module, model.towers["image"]
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    out = model(first_batch(model, source))
    out.loss.backward()
    assert math.isfinite(out.metrics["ijepa_loss"]) and set(out.terms) == {"ijepa_loss"}
    assert {k for k in out.metrics if k.startswith("ijepa_")} == {"ijepa_loss", "ijepa_emb_std", "ijepa_target_std",
                                                                  "ijepa_momentum"}
    assert 0.1 < out.metrics["ijepa_emb_std"] < 2 and 0.1 < out.metrics["ijepa_target_std"] < 2
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in obj.predictor.parameters())
    assert tower.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(1.0)
    model.after_step(0, 10)
    m = model.teachers["image_teacher"].momentum_at(0, 10)
    assert m == pytest.approx(0.9) and obj.momentum_now == pytest.approx(0.9)
    student = dict(tower.named_parameters())
    for n, p in teacher.named_parameters():  # once: twice would give m^2
        assert torch.allclose(p, m * before[n] + (1 - m) * student[n], atol=1e-6), n
    assert "predictor.mask_token" in obj.no_weight_decay()
    names = {n for g in model.param_groups(0.05) if g["weight_decay"] == 0 for n in g["names"]}
    assert "objectives.ijepa.predictor.mask_token" in names


def test_beside_mae_and_masked_dino_on_one_view_each_forward_runs_once(source):
    torch.manual_seed(0)
    objectives = {"ijepa": {**SMALL, "momentum": 0.99, "weight": 0.5},
                  "mae": {"view": "image", "mask_ratio": 0.5, "decoder_depth": 1},  # masked_dino's mask
                  "masked_dino": {"out_dim": 64, "momentum": 0.99}}
    model = build_model({"towers": NANO, "objectives": objectives})
    assert list(model.teachers) == ["image_teacher"]  # one target encoder for I-JEPA and the distillation
    assert sorted((f.tower, f.mask) for f in model.plan_forwards) == [
        ("image", "jepa_context"), ("image", "mask"), ("image_teacher", "")]
    batch = first_batch(model, source)
    assert sorted(name for _, name in batch.masks) == ["jepa_context", "jepa_targets", "mask"]
    out = sgd_step(model, batch)
    total = 0.5 * out.metrics["ijepa_loss"] + out.metrics["mae_loss"] + out.metrics["masked_dino_loss"]
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    with torch.no_grad():
        after = model(batch)
    assert after.metrics["ijepa_loss"] < out.metrics["ijepa_loss"]
    with pytest.raises(ConfigError, match=r"^model.objectives: ijepa and masked_dino share the teacher image_teacher"):
        build_model({"towers": NANO, "objectives": {**objectives, "ijepa": {**SMALL, "momentum": 0.996}}})


def test_used_alone_it_builds_and_moves_its_own_teacher(source):
    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    obj = IJEPA(towers, momentum=0.5, **SMALL)
    model = build_model({"towers": NANO, "objectives": {"ijepa": SMALL}})  # for the plan and a batch
    batch = first_batch(model, source)
    x = batch.views["image"]
    context = batch.mask("image", "jepa_context")
    feats = {obj.forwards()[0]: towers["image"].forward_tokens(x, context.keep),
             obj.forwards()[1]: obj.teacher.module.forward_tokens(x)}
    assert math.isfinite(obj(batch, feats).value.item())
    with torch.no_grad():
        for p in towers["image"].parameters():
            p.add_(1.0)
    before = obj.teacher.module.blocks[0].attn.qkv.weight.clone()
    obj.after_step(0, 10)
    student = towers["image"].blocks[0].attn.qkv.weight
    assert torch.allclose(obj.teacher.module.blocks[0].attn.qkv.weight, 0.5 * before + 0.5 * student)


@pytest.mark.parametrize("settings, match", [
    ({"context_ratio": 0.3}, r"^ijepa context_ratio=0.3: expected at least target_ratio=0.4 \(the context hides every "
                             r"target patch\)$"),
    ({"target_ratio": 1.0}, r"^ijepa target_ratio=1.0: expected a fraction 0 < target_ratio < 1 of the patches "
                            r"hidden$"),
    ({"target_blocks": 0}, r"^ijepa target_blocks=0: expected an integer >= 1$"),
    ({"loss": "l2"}, r"^ijepa loss='l2': expected one of smooth_l1, mse$"),
    ({"predictor_dim": 66}, r"^ijepa predictor_dim=66: expected a multiple of predictor_heads=4 and of 4$"),
    ({"target_mask": "m", "context_mask": "m"}, r"^ijepa target_mask='m' and context_mask: expected two different"),
    ({"view": "crop"}, r"view 'crop'"),
])
def test_bad_settings_are_one_line_errors(settings, match):
    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    with pytest.raises(ConfigError, match=match) as err:
        create_objective("ijepa", towers, **settings)
    assert "\n" not in str(err.value)


def test_a_tower_that_cannot_drop_patches_is_refused_in_one_line():
    swin = {"model": "swin_micro_patch2_window4_32", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]}
    with pytest.raises(ConfigError, match=r"^model.objectives.ijepa: ijepa: the SwinTransformer tower 'image' cannot "
                                          r"drop patches \(can_drop_tokens is False\); its context encoder"):
        build_model({"towers": {"image": swin}, "objectives": {"ijepa": {}}})


# -- through `zir train` -----------------------------------------------------------------------------

def test_the_recipe_trains_with_the_knn_monitor(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "configs/ijepa.yaml", "data.source=shapes", "train.steps=2", "train.monitor_every=2",
                 "train.monitor_samples=40", "data.options.n=64", "data.batch_size=16", "train.threads=1",
                 "--out", str(run), "--no-progress"]) == 0
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r["ijepa_loss"])) and float(r["ijepa_emb_std"]) > 0 for r in rows)
    assert rows[0]["knn_top1"] == "" and 0 <= float(rows[1]["knn_top1"]) <= 100


def test_the_unified_recipe_takes_an_ijepa_term_by_overrides(tmp_path):
    # the documented command (docs/objectives.md), with the self-supervised terms from the first step and less data:
    # I-JEPA reads the `image` view the other four read (a 4x4 patch grid at 16 px), with masks of its own, and
    # shares the EMA teacher (and its forward on the whole view) with masked_dino
    run = tmp_path / "run"
    assert main(["train", "unified", "model.objectives.ijepa.weight=0.5", "model.objectives.ijepa.momentum=0.99",
                 "model.objectives.masked_dino.start=0", "model.objectives.mae.start=0", "train.steps=2",
                 "data.options.n=64", "data.batch_size=16", "train.threads=1", "train.precision=fp32",
                 "--out", str(run), "--no-progress"]) == 0
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    for row in rows:
        parts = {name: float(row[f"{name}_loss"]) for name in ("clip", "coca", "mae", "masked_dino", "ijepa")}
        assert all(math.isfinite(v) for v in parts.values()) and float(row["ijepa_emb_std"]) > 0
        weighted = parts["clip"] + parts["coca"] + parts["mae"] + parts["masked_dino"] + 0.5 * parts["ijepa"]
        assert float(row["loss"]) == pytest.approx(weighted, rel=1e-4)
