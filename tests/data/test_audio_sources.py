"""Audio sources: a folder of WAV files with class sub-folders, shards with .wav members, the built-in `fsdd`
(read from --data-root / $ZIR_DATA like cifar10; skipped where this machine lacks ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import SHARED, tone, tone_folder, write_shard
from zir.data import open_source
from zir.data.audio_sources import AudioFolderSource
from zir.data.shards import ShardSource
from zir.data.sources import BadSample
from zir.data.wav import encode_wav
from zir.errors import ConfigError


def test_a_folder_of_class_subfolders_of_wavs_opens_as_a_labelled_audio_source(tmp_path):
    root = tone_folder(tmp_path / "sounds", {"dog": 300.0, "owl": 1500.0}, per_class=3)
    src = open_source(root)
    assert isinstance(src, AudioFolderSource) and src.classes == ("dog", "owl") and len(src) == 6
    assert src.labels().tolist() == [0, 0, 0, 1, 1, 1]
    s = src.get(4)
    assert s.key == "owl/1.wav" and s.label == 1 and s.image is None and s.sample_rate == 8000
    assert s.audio.dtype == np.float32 and s.audio.shape == (2400,)
    assert src.templated_captions(0)[0] == "the sound of a dog." and src.zeroshot_templates[0] == "the sound of a {}."
    assert isinstance(open_source(f"audio:{root / 'dog'}"), AudioFolderSource)  # the prefix forces the kind


def test_an_audio_folder_counts_a_bad_file_and_names_an_empty_folder(tmp_path):
    root = tone_folder(tmp_path / "s", per_class=1)
    (root / "low" / "broken.wav").write_bytes(b"RIFF....not really")
    src = open_source(root)
    with pytest.raises(BadSample, match="not a WAV file"):
        src.get([str(f) for f in src.files].index(str(root / "low" / "broken.wav")))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"audio folder .*: no audio files found \(looked for .wav, .wave, .flac, .ogg, .oga\)"):
        open_source(f"audio:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match=r"data.options.max_seconds=0: expected a positive number"):
        open_source(root, max_seconds=0)


def test_shards_with_wav_members_give_audio_labels_and_templated_captions(tmp_path):
    samples = [{"key": f"k{i}", "wav": encode_wav(tone(400 + 100 * i), 8000), "cls": str(i % 2).encode(),
                "txt": ["seven", "two"][i % 2].encode()} for i in range(4)]
    samples.append({"key": "odd", "wav": b"not audio", "cls": b"0"})
    shard = write_shard(tmp_path / "a-000000.tar", samples)
    src = open_source(shard, caption_templates=["{c}", "the digit {c}"])
    got = list(src.stream())
    assert [type(g).__name__ for g in got] == ["Sample"] * 4 + ["BadSample"]
    assert got[1].captions == ["two", "the digit two"] and got[1].label == 1 and got[1].audio.shape == (4000,)
    assert got[-1].reason == "not a WAV file"
    assert list(src.iter_captions(limit=1)) == ["seven", "the digit seven"]
    with pytest.raises(ConfigError, match=r"caption_templates: 'the digit' is not a template with \{c\}"):
        ShardSource(str(shard), caption_templates=["the digit"])
    assert isinstance(open_source(tmp_path), ShardSource)  # a folder of shards, even of audio


def test_fsdd_without_a_data_root_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ZIR_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"^fsdd: no folder .*fsdd; put its shards \(train-\*.tar.gz"):
        open_source("fsdd", data_root=tmp_path)


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_real_fsdd_test_split_has_every_digit_with_spoken_word_captions():
    src = open_source("fsdd:test", data_root=SHARED)
    samples = list(src)
    assert len(samples) == src.length == 300 and src.classes[7] == "seven"
    assert np.bincount([s.label for s in samples]).tolist() == [30] * 10
    s = samples[0]
    assert s.sample_rate == 8000 and 0.1 < len(s.audio) / 8000 < 2.5 and s.image is None
    word = src.classes[s.label]
    assert s.captions[:2] == [word, f"the digit {word}"] and src.zeroshot_templates[1] == "the digit {}"


def test_zir_data_inspect_reports_durations_and_draws_spectrograms(tmp_path, capsys):
    from zir.cli import main

    root = tone_folder(tmp_path / "t", per_class=3)
    assert main(["data", "inspect", str(root), "--png", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "audio       8000 Hz (6); seconds min 0.20, mean 0.3, p95 0.40, max 0.40" in out and "image size" not in out
    assert (tmp_path / "grid.png").stat().st_size > 0
