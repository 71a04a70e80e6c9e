"""SLIP: CLIP and SimCLR share the first view's image features (two image forwards), or CLIP reads its own light view."""

import pytest
import torch

import zir.objectives.slip  # noqa: F401  (registers slip)
from zir.data import ShapesSource, make_loader, train_bpe
from zir.model import build_model
from zir.objectives import Forward


def test_slip_shares_image_features_and_learns():
    train = ShapesSource("train", n=200, size=16, objects=(1, 1))
    tok = train_bpe(train.iter_captions(), vocab_size=300, context_length=20)
    torch.manual_seed(0)
    model = build_model({
        "towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
                   "text": {"model": "text_nano", "vocab_size": tok.vocab_size, "context_length": 20}},
        "objectives": {"slip": {}},
    })
    plan = model.view_plan()
    assert (plan.global_views, plan.text, plan.image, plan.pipeline) == (2, 1, 0, "simclr")
    assert model.plan_forwards == [Forward("image", "global_0"), Forward("text", "text_0"), Forward("image", "global_1")]
    calls = []
    image = model.towers["image"]
    original = image.forward_tokens
    image.forward_tokens = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    batch = next(iter(make_loader(train, plan, 32, tokenizer=tok)))
    first = model(batch)
    assert len(calls) == 2  # two image forwards for CLIP + SimCLR
    assert {"slip_clip_loss", "slip_simclr_loss", "slip_clip_acc", "slip_simclr_acc"} <= set(first.metrics)
    assert first.metrics["slip_loss"] == pytest.approx(first.metrics["slip_clip_loss"] + first.metrics["slip_simclr_loss"], rel=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(8):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(step, 8)
    assert out.loss.item() < first.loss.item()


def test_slip_can_give_clip_its_own_light_view():
    train = ShapesSource("train", n=64, size=16, objects=(1, 1))
    tok = train_bpe(train.iter_captions(), vocab_size=300, context_length=20)
    model = build_model({
        "towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
                   "text": {"model": "text_nano", "vocab_size": tok.vocab_size, "context_length": 20}},
        "objectives": {"slip": {"clip_view": "image"}},
    })
    plan = model.view_plan()
    assert (plan.global_views, plan.image, plan.pipeline) == (2, 1, "simclr")  # SimCLR keeps its augmentation
    assert set(model.plan_forwards) == {Forward("image", "image"), Forward("image", "global_0"),
                                        Forward("image", "global_1"), Forward("text", "text_0")}
    batch = next(iter(make_loader(train, plan, 16, tokenizer=tok)))
    model.eval()
    with torch.no_grad():
        before = model(batch).metrics
        batch.views["global_0"] = torch.flip(batch.views["global_0"], dims=(0,))  # other images in SimCLR's view
        shuffled_simclr = model(batch).metrics
        batch.views["image"] = torch.flip(batch.views["image"], dims=(0,))  # other images in CLIP's view
        shuffled_clip = model(batch).metrics
    # CLIP reads the `image` view, not SimCLR's first view
    assert shuffled_simclr["slip_clip_loss"] == pytest.approx(before["slip_clip_loss"], rel=1e-6)
    assert shuffled_simclr["slip_simclr_loss"] != pytest.approx(before["slip_simclr_loss"], rel=1e-4)
    assert shuffled_clip["slip_clip_loss"] != pytest.approx(before["slip_clip_loss"], rel=1e-4)
