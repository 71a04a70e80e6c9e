"""ImageBind: text and audio each bound to the image through one shared image projection, never to each other;
its joint space as `zir eval` reads it (the audio tower against the text tower's prompts: emergent zero-shot)."""

from __future__ import annotations

import math

import pytest
import torch

from zir.errors import ConfigError
from zir.model import build_model
from zir.objectives.base import Forward
from zir.objectives.imagebind import JointSpace

TOWERS = {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
          "text": {"model": "text_nano", "vocab_size": 322, "context_length": 8},
          "audio": {"model": "ast_nano"}}


def imagebind(**settings):
    torch.manual_seed(0)
    return build_model({"towers": TOWERS, "objectives": {"imagebind": {"bind": ["text", "audio"], **settings}}})


def features(model, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(b, 5, model.towers[f.tower].embed_dim, generator=g, requires_grad=True)
            for f in model.objectives["imagebind"].forwards()}


def test_one_image_projection_anchors_a_clip_loss_per_bound_tower():
    model = imagebind()
    obj = model.objectives["imagebind"]
    assert [(f.tower, f.view.name) for f in obj.forwards()] == [("image", "image"), ("text", "text_0"), ("audio", "audio_0")]
    assert obj.anchor_proj.weight.shape == (64, 64) and set(obj.proj) == {"text", "audio"} and set(obj.losses) == {"text", "audio"}
    plan = model.view_plan()
    assert (plan.image, plan.text, plan.audio) == (1, 1, 1)
    feats = features(model)
    out = obj(None, feats)
    assert math.isfinite(out.value.item()) and set(out.metrics) == {"text_loss", "text_acc", "audio_loss", "audio_acc"}
    assert out.value.item() == pytest.approx((out.metrics["text_loss"] + out.metrics["audio_loss"]) / 2, rel=1e-6)
    assert obj.no_weight_decay() == {"losses.text.logit_scale", "losses.audio.logit_scale"}


def test_no_loss_pairs_audio_with_text():
    """The gradient reaching the audio features is the same whatever the captions are: no audio-text term."""
    model = imagebind()
    obj = model.objectives["imagebind"]
    audio = Forward("audio", "audio_0")
    grads = []
    for text_seed in (1, 2):
        feats = features(model, seed=0)
        feats[Forward("text", "text_0")] = features(model, seed=text_seed)[Forward("text", "text_0")]
        obj(None, feats).value.backward()
        grads.append(feats[audio].grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_the_joint_space_projects_audio_and_text_as_eval_reads_them():
    model = imagebind()
    obj = model.objectives["imagebind"]
    space = obj.joint_space("audio")
    assert isinstance(space, JointSpace) and obj.joint_space("nope") is None
    pooled = torch.randn(4, 64)
    want = torch.nn.functional.normalize(obj.proj["audio"](pooled), dim=-1)
    assert torch.allclose(space.project_image(pooled), want)
    assert torch.allclose(obj.joint_space("image").project_image(pooled),
                          torch.nn.functional.normalize(obj.anchor_proj(pooled), dim=-1))
    ids = torch.randint(0, 322, (3, 8))
    assert space.encode_text(ids).shape == (3, 64)
    no_text = build_model({"towers": {k: TOWERS[k] for k in ("image", "audio")},
                           "objectives": {"imagebind": {"bind": ["audio"]}}})
    assert no_text.objectives["imagebind"].joint_space("audio") is None


def test_eval_finds_the_emergent_joint_space_of_the_audio_tower():
    from zir.eval.run_loading import image_text_objective, scored_tower

    model = imagebind()
    assert scored_tower(model)[0] == "image" and scored_tower(model, "audio")[0] == "audio"
    space = image_text_objective(model, "audio")
    assert isinstance(space, JointSpace) and space.tower_name == "audio" and space.text_tower_name == "text"


@pytest.mark.parametrize("settings,message", [
    ({"bind": ["image", "audio"]}, r"^model.objectives.imagebind: objective imagebind: bind names 'image'; expected towers of the model other than the anchor"),
    ({"bind": "audio"}, r"^model.objectives.imagebind: objective imagebind: bind='audio': expected a list of distinct tower names"),
    ({"bind": ["text", "text"]}, r"^model.objectives.imagebind: objective imagebind: bind=\['text', 'text'\]: expected a list of distinct"),
    ({"tower": "audio", "bind": ["text"]}, r"^model.objectives.imagebind: objective imagebind: tower 'audio' is an audio tower, not an image tower; the anchor"),
])
def test_bad_bindings_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        imagebind(**settings)
