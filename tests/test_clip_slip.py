"""SLIP: CLIP and SimCLR share the first view's image features (two image forwards, not three)."""

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
