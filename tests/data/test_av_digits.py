"""The built-in audio-visual source `av_digits`: each FSDD recording with an image of the same digit and its
spoken-word captions, and splits that keep test recordings and test images out of training."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import SHARED
from zir.data import make_loader, open_source
from zir.errors import ConfigError, UnknownNameError

needs_fsdd = pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")


def test_av_digits_without_a_data_root_says_where_fsdd_goes(tmp_path):
    with pytest.raises(ConfigError, match=r"^fsdd: no folder .*fsdd"):
        open_source("av_digits", data_root=tmp_path)


def test_av_digits_refuses_a_split_it_does_not_have():
    with pytest.raises(UnknownNameError, match="^av_digits has no split 'val': expected one of train, test"):
        open_source("av_digits:val", data_root=SHARED)


@needs_fsdd
def test_every_recording_is_paired_with_an_image_of_its_own_digit_and_its_caption():
    src = open_source("av_digits:test", data_root=SHARED)
    digits = open_source("digits:test")
    assert len(src) == 300 and src.classes[7] == "seven" and src.image_size == 32
    for i in range(0, 300, 7):
        s = src.get(i)
        assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8 and s.audio.ndim == 1 and s.sample_rate == 8000
        assert digits.labels()[src.image_index(i)] == s.label
        assert f"the digit {src.classes[s.label]}" in s.captions
    again = open_source("av_digits:test", data_root=SHARED)
    assert [again.image_index(i) for i in range(300)] == [src.image_index(i) for i in range(300)]  # fixed pairs
    assert len({src.image_index(i) for i in range(300)}) > 150  # many images, not one a digit


@needs_fsdd
def test_test_recordings_and_test_images_are_never_in_training():
    train, test = open_source("av_digits:train", data_root=SHARED), open_source("av_digits:test", data_root=SHARED)
    assert len(train) == 2700
    train_keys = {r.key.split(":")[1] for r in train.recordings}
    assert not train_keys & {r.key.split(":")[1] for r in test.recordings}
    assert not set(train.image_keys) & set(test.image_keys)
    audio_of = {r.audio.tobytes() for r in train.recordings}
    assert not audio_of & {r.audio.tobytes() for r in test.recordings}  # no test clip under another name


@needs_fsdd
def test_a_batch_holds_the_image_the_recording_and_the_caption_of_each_sample():
    src = open_source("av_digits:test", data_root=SHARED)
    spec = {"sample_rate": 8000, "n_fft": 512, "win_length": 200, "hop_length": 80, "n_mels": 64, "frames": 64}
    plan = {"image": 1, "text": 1, "audio": 1, "pipeline": "none", "size": 32, "spectrogram": spec,
            "audio_patch_size": (8, 8)}
    batch = next(iter(make_loader(src, plan, batch_size=8, workers=0)))
    assert batch.views["image"].shape == (8, 3, 32, 32) and batch.views["audio_0"].shape == (8, 1, 64, 64)
    first = src.get([r.key for r in src.recordings].index(batch.keys[0]))
    assert batch.keys[0] == first.key and batch.labels[0] == first.label
    assert batch.captions["text_0"][0] in first.captions
