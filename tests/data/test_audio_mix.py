"""Mixing two clips as an audio view op (`data.plan.audio_mix`): each clip with another clip of the batch as
background at a random share below one half, through the typed view plan; off by default."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import metrics_rows, tone, tone_folder
from zir.config import load_config
from zir.data import ViewPlan, make_loader, open_source
from zir.data.audio_views import AUDIO_PIPELINES, AudioAugment, audio_view, draw_mix, fixed_length, mix_clips
from zir.data.spectrogram import Spectrogram, log_mel
from zir.errors import ConfigError
from zir.recipes import RECIPES_DIR
from zir.train import train
from zir.train.recipe_model import build_model, view_plan_for

SPEECH = {"sample_rate": 8000, "n_fft": 512, "win_length": 200, "hop_length": 80, "n_mels": 64, "frames": 64}


def test_mix_clips_is_the_weighted_sum_with_the_partner_clip():
    waves = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [-1.0, 0.0, 1.0]])
    got = mix_clips(waves, torch.tensor([1, 2, 0]), torch.tensor([0.25, 0.0, 0.4]))
    want = torch.tensor([[0.75 * 1 + 0.25 * 10, 0.75 * 2 + 0.25 * 20, 0.75 * 3 + 0.25 * 30],
                         [10.0, 20.0, 30.0],
                         [0.6 * -1 + 0.4 * 1, 0.6 * 0 + 0.4 * 2, 0.6 * 1 + 0.4 * 3]])
    assert torch.allclose(got, want, atol=1e-6)
    partner, share = draw_mix(np.random.default_rng(0), 7, 0.3)
    assert (partner != torch.arange(7)).all() and ((share >= 0) & (share <= 0.3)).all() and partner.dtype == torch.long


def test_a_mixed_view_is_the_log_mel_of_the_mixed_crops():
    waves = [torch.as_tensor(tone(f, s), dtype=torch.float32) for f, s in ((300, 0.9), (1200, 0.5), (2500, 0.7))]
    spec, seed = Spectrogram.from_dict(SPEECH), 1234
    augment = AudioAugment(crop=True, mix=0.4)
    got = audio_view(waves, spec, augment, -8.0, 5.0, seed)
    rng = np.random.default_rng(seed)  # the op's own draws, in its order: crops, then partners and shares
    clips = fixed_length(waves, spec.samples, True, rng)
    partner, share = draw_mix(rng, 3, 0.4)
    assert torch.allclose(got[:, 0], (log_mel(mix_clips(clips, partner, share), spec) + 8.0) / 5.0, atol=1e-5)
    plain = audio_view(waves, spec, AUDIO_PIPELINES["crop"], -8.0, 5.0, seed)
    assert not torch.allclose(got, plain) and torch.equal(audio_view(waves[:1], spec, augment, -8.0, 5.0, seed),
                                                          audio_view(waves[:1], spec, AUDIO_PIPELINES["crop"], -8.0, 5.0, seed))


def test_the_plan_carries_audio_mix_off_by_default_and_checks_it(tmp_path):
    assert ViewPlan().audio_mix == 0.0
    base = {"global": 0, "audio": 1, "spectrogram": SPEECH, "audio_patch_size": [8, 8]}
    with pytest.raises(ConfigError, match=r"audio_mix=0.5: expected a number in \[0, 0.5\)"):
        ViewPlan.from_dict({**base, "audio_mix": 0.5})
    source = open_source(tone_folder(tmp_path / "t"))
    views = [next(iter(make_loader(source, ViewPlan.from_dict({**base, "audio_mix": m}), 4, shuffle=False))).views["audio_0"]
             for m in (0.0, 0.0, 0.3)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])


def test_a_recipe_with_audio_mix_trains_two_steps(tmp_path):
    folder = tone_folder(tmp_path / "wavs", {"zero": 300.0, "one": 900.0, "two": 1800.0}, per_class=4)
    cfg = load_config(RECIPES_DIR / "audio_clip.yaml", [
        "train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=2", "train.keep_last=1",
        "model.towers.audio.model=ast_nano", f"data.source={folder}", "data.plan.audio_mix=0.3"])
    assert view_plan_for(build_model(cfg.model), cfg).audio_mix == 0.3  # the recipe's option reaches the loader's plan
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert all(math.isfinite(float(r["loss"])) for r in metrics_rows(tmp_path / "run"))
