"""Objectives on the audio tower: Audio-MAE on spectrogram patches, CLIP and SigLIP between audio and text (with
FLIP-style token dropping), and one-line refusals for objectives that read image views with an audio tower."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import first_batch, tone_folder
from zir.data import load_tokenizer, open_source
from zir.errors import ConfigError
from zir.model import build_model
from zir.objectives.mae import patchify, unpatchify
from zir.recipes import TOKENIZERS_DIR

AUDIO = {"audio": {"model": "ast_nano"}}
TEXT = {"model": "text_nano", "vocab_size": 322, "context_length": 8}


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    return open_source(tone_folder(tmp_path_factory.mktemp("tones"), {"zero": 300.0, "one": 900.0, "two": 1800.0}))


def trained_step(spec: dict, source, tokenizer=None):
    torch.manual_seed(0)
    model = build_model(spec)
    batch = first_batch(model, source, 6, tokenizer)
    out = model(batch)
    out.loss.backward()
    grads = [p.grad for p in model.towers["audio"].parameters() if p.grad is not None]
    assert math.isfinite(out.loss.item()) and grads and all(torch.isfinite(g).all() for g in grads)
    return model, batch, out


def test_audio_mae_reconstructs_hidden_spectrogram_patches(sounds):
    model, batch, out = trained_step({"towers": AUDIO, "objectives": {"mae": {"tower": "audio", "mask_ratio": 0.8}}}, sounds)
    mae = model.objectives["mae"]
    assert mae.view == "audio_0" and mae.decoder.pred.out_features == 8 * 8 * 1
    m = batch.mask("audio_0")
    assert m.grid == (8, 8) and m.keep.shape == (6, 13) and out.metrics["mae_mask_ratio"] == pytest.approx(51 / 64)
    spec = batch.views["audio_0"]
    recon = mae.reconstruct(spec, m.keep)
    assert recon.shape == spec.shape == (6, 1, 64, 64)
    visible = torch.zeros(6, 64, dtype=torch.bool).scatter(1, m.keep, True)
    assert torch.equal(patchify(recon, 8)[visible], patchify(spec, 8)[visible])  # the visible patches are copied


def test_rectangular_patches_round_trip():
    x = torch.randn(2, 1, 16, 24)
    assert patchify(x, (4, 8)).shape == (2, 12, 32) and torch.equal(unpatchify(patchify(x, (4, 8)), (4, 8), (4, 3), 1), x)


@pytest.mark.parametrize("objective", ["clip", "siglip", "coca"])
def test_audio_text_contrastive_and_captioning_with_flip_style_token_dropping(objective, sounds):
    tokenizer = load_tokenizer(TOKENIZERS_DIR / "fsdd.json")
    spec = {"towers": {**AUDIO, "text": TEXT}, "objectives": {objective: {"tower": "audio", "keep": 0.5}}}
    model, batch, out = trained_step(spec, sounds, tokenizer)
    obj = model.objectives[objective]
    assert obj.image_view == "audio_0" and batch.mask("audio_0").keep.shape == (6, 32)
    assert batch.captions["text_0"][0].endswith(("zero.", "one.", "two."))  # class-name captions about sounds
    assert batch.tokens["text_0"].shape == (6, 8) and f"{objective}_loss" in out.metrics
    with torch.no_grad():
        whole = obj.encode_image(batch.views["audio_0"])
    assert whole.shape == (6, 64) and torch.allclose(whole.norm(dim=-1), torch.ones(6))


def test_mae_and_clip_share_one_masked_audio_forward(sounds):
    tokenizer = load_tokenizer(TOKENIZERS_DIR / "fsdd.json")
    spec = {"towers": {**AUDIO, "text": TEXT},
            "objectives": {"clip": {"tower": "audio", "keep": 0.25}, "mae": {"tower": "audio", "mask_ratio": 0.75}}}
    model = build_model(spec)
    assert [(f.tower, f.view.name, f.mask) for f in model.plan_forwards] == [("audio", "audio_0", "mask"), ("text", "text_0", "")]
    trained_step(spec, sounds, tokenizer)


@pytest.mark.parametrize("objective,message", [
    ("simclr", r"objective simclr: reads the image view global_0 with the audio tower 'audio'; audio towers read audio_<i> views"),
    ("ibot", r"ibot: the AudioTransformer tower 'audio' is an audio tower; ibot needs an image tower"),
    ("mae", None),
])
def test_image_only_objectives_on_an_audio_tower_are_refused_in_one_line(objective, message):
    spec = {"towers": AUDIO, "objectives": {objective: {"tower": "audio"}}}
    if message is None:
        build_model(spec)
        return
    with pytest.raises(ConfigError, match=message) as err:
        build_model(spec)
    assert "\n" not in str(err.value)
