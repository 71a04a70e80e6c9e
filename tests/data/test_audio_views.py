"""Audio views through the typed view plan: fixed-duration log-mel views with time crops and SpecAugment, patch
masks on the (frequency, time) grid, resampling in the loader, and bad audio skipped and counted like bad images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import tone, tone_folder
from zir.data import ViewPlan, make_loader, open_source
from zir.data.audio_views import AUDIO_PIPELINES, audio_view, fixed_length, spectrogram_stats
from zir.data.loader import to_item
from zir.data.plan import Skipped
from zir.data.sources import Sample
from zir.data.spectrogram import Spectrogram, log_mel
from zir.data.wav import encode_wav
from zir.errors import ConfigError

SPEECH = {"sample_rate": 8000, "n_fft": 512, "win_length": 200, "hop_length": 80, "n_mels": 64, "frames": 64}


def plan(**over) -> ViewPlan:
    return ViewPlan.from_dict({"global": 0, "audio": 1, "spectrogram": SPEECH, "audio_patch_size": [8, 8], **over})


def test_an_audio_plan_gives_normalised_spectrogram_views_and_masks_on_the_patch_grid(tmp_path):
    p = plan(audio=2, audio_mean=-8.0, audio_std=5.0, masks={"audio_0": [{"name": "mae", "ratio": 0.75}]})
    assert p.audio_grid == (8, 8) and p.audio_view_names() == ["audio_0", "audio_1"] and p.view_names() == []
    batch = next(iter(make_loader(open_source(tone_folder(tmp_path / "t")), p, 4, shuffle=False)))
    assert set(batch.views) == {"audio_0", "audio_1"} and batch.views["audio_0"].shape == (4, 1, 64, 64)
    assert not torch.equal(batch.views["audio_0"], batch.views["audio_1"])  # each view its own time crop
    m = batch.mask("audio_0", "mae")
    assert m.grid == (8, 8) and m.keep.shape == (4, 16) and m.mask.shape == (4, 64)
    assert -3 < float(batch.views["audio_0"].mean()) < 3  # roughly standardised


def test_views_are_the_same_for_the_same_seed_and_the_evaluation_view_reads_the_start():
    spec = Spectrogram(**SPEECH)
    waves = [torch.tensor(tone(440, 1.0), dtype=torch.float32), torch.tensor(tone(880, 0.3), dtype=torch.float32)]
    a = audio_view(waves, spec, AUDIO_PIPELINES["crop"], -8.0, 5.0, seed=3)
    assert torch.equal(a, audio_view(waves, spec, AUDIO_PIPELINES["crop"], -8.0, 5.0, seed=3))
    assert not torch.equal(a, audio_view(waves, spec, AUDIO_PIPELINES["crop"], -8.0, 5.0, seed=4))
    start = audio_view(waves, spec, AUDIO_PIPELINES["none"], -8.0, 5.0, seed=3)
    first = (log_mel(waves[0][:spec.samples], spec) + 8.0) / 5.0
    assert torch.allclose(start[0, 0], first, atol=1e-5)
    silence = (np.log(1e-6) + 8.0) / 5.0  # the short recording is padded with silence after its end
    assert torch.allclose(start[1, 0, :, 40:], torch.full((64, 24), silence), atol=1e-5)
    cut = fixed_length([torch.arange(10.0)], 4, True, np.random.default_rng(0))
    assert cut.shape == (1, 4) and float(cut[0, 1] - cut[0, 0]) == 1.0  # a window of the recording


def test_specaugment_hides_whole_bands_and_spans_at_the_mean():
    spec = Spectrogram(**SPEECH)
    waves = [torch.tensor(tone(300 + 100 * i, 1.0, seed=i), dtype=torch.float32) for i in range(8)]
    view = audio_view(waves, spec, AUDIO_PIPELINES["specaugment"], -8.0, 5.0, seed=0)[:, 0]
    bands = (view == 0).all(dim=2)  # (B, n_mels): bins hidden at every frame
    spans = (view == 0).all(dim=1)  # (B, frames): frames hidden at every bin
    assert bands.any() and spans.any()
    assert int(bands.sum(dim=1).max()) <= 2 * int(0.15 * 64) and int(spans.sum(dim=1).max()) <= 2 * int(0.15 * 64)


def test_the_loader_resamples_to_the_front_ends_rate_and_needs_no_image(tmp_path):
    root = tmp_path / "hi" / "a"
    root.mkdir(parents=True)
    (root / "x.wav").write_bytes(encode_wav(tone(440, 0.5, rate=16000), 16000))
    item = to_item(open_source(tmp_path / "hi").get(0), None, 32, False, need_image=False, sample_rate=8000)
    assert item.image is None and item.audio.shape == (4000,) and item.audio.dtype == torch.float32
    no_audio = to_item(Sample("k", image=np.zeros((4, 4, 3), np.uint8)), None, 4, False, False, 8000)
    assert isinstance(no_audio, Skipped) and no_audio.reason == "no audio (the plan has audio views)"


def test_bad_audio_is_skipped_and_counted_like_bad_images(tmp_path):
    root = tone_folder(tmp_path / "t", per_class=3)
    good = (root / "low" / "0.wav").read_bytes()
    (root / "low" / "cut.wav").write_bytes(good[:-200])
    (root / "low" / "quiet.wav").write_bytes(encode_wav(np.zeros(800), 8000))
    (root / "high" / "text.wav").write_bytes(b"hello, not audio at all")
    loader = make_loader(open_source(root), plan(), 4, drop_last=False)
    keys = [k for batch in loader for k in batch.keys]
    assert len(keys) == 6
    assert loader.report.skipped == {"truncated WAV": 1, "silent audio": 1, "not a WAV file": 1}
    assert loader.report.examples["silent audio"] == ["low/quiet.wav"]


def test_audio_plan_fields_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"spectrogram of 64 bins x 64 frames is not divisible into audio_patch_size=16x12"):
        plan(audio_patch_size=[16, 12])
    with pytest.raises(ConfigError, match=r"audio_pipeline='loud': expected one of none, crop, specaugment"):
        plan(audio_pipeline="loud")
    with pytest.raises(ConfigError, match=r"audio_std=0: expected a positive number"):
        plan(audio_std=0)
    with pytest.raises(ConfigError, match=r"masks on audio views hide whole spectrogram patches"):
        plan(masks={"audio_0": [{"name": "m", "patch_size": 16}]})


def test_spectrogram_stats_measure_what_the_views_normalise():
    spec = Spectrogram(**SPEECH)
    waves = [tone(300 + 50 * i, 0.2 + 0.1 * i, seed=i) for i in range(5)]
    mean, std = spectrogram_stats(waves, spec)
    view = audio_view([torch.tensor(w, dtype=torch.float32) for w in waves], spec, AUDIO_PIPELINES["none"], mean, std, 0)
    assert abs(float(view.mean())) < 1e-4 and float(view.std()) == pytest.approx(1.0, abs=1e-3)
