"""An audio caption table: (audio path, caption) rows, paths relative to the table's folder, opened by
`open_source` like an image caption table; bad recordings skipped and counted like bad images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import tone, tone_folder
from zir.data import ViewPlan, make_loader, open_source
from zir.data.audio_sources import AudioCaptionTableSource, table_holds_audio
from zir.data.sources import CaptionTableSource
from zir.data.wav import encode_wav
from zir.errors import ConfigError

SPEECH = {"sample_rate": 8000, "n_fft": 512, "win_length": 200, "hop_length": 80, "n_mels": 64, "frames": 64}


@pytest.fixture
def clips(tmp_path):
    """set/t/low/{0,1,2}.wav, set/t/high/{0,1,2}.wav: real 16-bit WAV tones."""
    tone_folder(tmp_path / "set" / "t", per_class=3)
    return tmp_path / "set"


def test_a_csv_of_wav_paths_opens_as_an_audio_caption_table(clips, tmp_path, monkeypatch):
    (clips / "captions.csv").write_text(
        "audio,caption\nt/low/0.wav,a low hum\nt/high/1.wav,a high whistle\nt/low/0.wav,  a   deep tone \n")
    monkeypatch.chdir(tmp_path)  # paths are relative to the table, not to the working folder
    src = open_source(clips / "captions.csv")
    assert isinstance(src, AudioCaptionTableSource) and len(src) == 2 and src.has_captions
    s = src.get(0)
    assert s.key == "t/low/0.wav" and s.captions == ["a low hum", "a deep tone"] and s.image is None
    assert s.sample_rate == 8000 and s.audio.dtype == np.float32 and s.audio.shape == (1600,)
    assert src.zeroshot_templates[0] == "the sound of a {}." and src.name.startswith("audio-table:")
    assert list(src.iter_captions()) == ["a low hum", "a deep tone", "a high whistle"]


def test_audio_is_told_from_images_by_column_name_or_by_the_files_named(clips):
    (clips / "a.tsv").write_text("path\ttext\nt/high/2.wav\tbeep\n")  # a generic column of .wav files
    (clips / "b.jsonl").write_text(json.dumps({"sound": "t/low/1.wav", "caption": "hum"}) + "\n")
    (clips / "c.csv").write_text("image,caption\nx.png,a cat\n")
    assert [table_holds_audio(clips / n) for n in ("a.tsv", "b.jsonl", "c.csv")] == [True, True, False]
    src = open_source(clips / "a.tsv")
    assert isinstance(src, AudioCaptionTableSource) and src.audio_column == "path" and src.get(0).captions == ["beep"]
    assert open_source(clips / "b.jsonl").audio_column == "sound"
    assert type(open_source(f"table:{clips / 'c.csv'}")) is CaptionTableSource  # table: keeps meaning images
    (clips / "d.csv").write_text("clip,words\nt/low/1.wav,hum\n")  # columns named otherwise: the prefix forces it
    src = open_source(f"audio:{clips / 'd.csv'}", audio_column="clip", caption_column="words")
    assert isinstance(src, AudioCaptionTableSource) and src.get(0).captions == ["hum"]


def test_audio_table_errors_are_one_line(clips):
    (clips / "d.csv").write_text("clip,words\nt/low/1.wav,hum\n")
    with pytest.raises(ConfigError, match=r"d.csv: no audio column; name one of audio, .* or pass audio_column="):
        open_source(f"audio:{clips / 'd.csv'}")
    with pytest.raises(ConfigError, match=r"d.csv: no caption column 'text' \(columns: clip, words\)"):
        AudioCaptionTableSource(clips / "d.csv", audio_column="clip", caption_column="text")
    with pytest.raises(ConfigError, match=r"caption table .*nope.csv: no such file"):
        AudioCaptionTableSource(clips / "nope.csv")
    (clips / "e.csv").write_text("audio,caption\n../t/low/1.wav,hum\n")
    with pytest.raises(ConfigError, match=r"e.csv, line 2: audio path '../t/low/1.wav' is outside the table's folder"):
        open_source(clips / "e.csv")
    with pytest.raises(ConfigError, match=r"data.options.max_seconds=-1: expected a positive number"):
        open_source(clips / "e.csv", max_seconds=-1)
    with pytest.raises(ConfigError, match=r"data.options.colour: not an option of an audio caption table .*; accepted: "
                                          r"allow_outside, audio_column, caption_column, max_seconds"):
        open_source(clips / "e.csv", size=3, colour=2)  # size belongs to image sources (a warning); colour to none


def test_bad_and_missing_recordings_are_skipped_and_counted(clips):
    good = (clips / "t" / "low" / "0.wav").read_bytes()
    (clips / "cut.wav").write_bytes(good[:-200])
    (clips / "quiet.wav").write_bytes(encode_wav(np.zeros(800), 8000))
    (clips / "text.wav").write_bytes(b"hello, not audio at all")
    (clips / "loud.wav").write_bytes(encode_wav(tone(700, 0.3), 8000))
    rows = ["t/low/0.wav,one", "cut.wav,two", "quiet.wav,three", "text.wav,four", "gone.wav,five", ",six",
            "loud.wav,seven", "t/high/2.wav,"]
    (clips / "mixed.csv").write_text("audio,caption\n" + "\n".join(rows) + "\n")
    src = open_source(clips / "mixed.csv")
    plan = ViewPlan.from_dict({"global": 0, "audio": 1, "text": 1, "spectrogram": SPEECH, "audio_patch_size": [8, 8]})
    loader = make_loader(src, plan, 4, drop_last=False, shuffle=False)
    batches = list(loader)
    assert sorted(k for b in batches for k in b.keys) == ["loud.wav", "t/low/0.wav"]
    assert batches[0].views["audio_0"].shape[1:] == (1, 64, 64)
    assert loader.report.skipped == {"truncated WAV": 1, "silent audio": 1, "not a WAV file": 1, "missing file": 1,
                                     "row names no audio": 1, "no usable caption": 1}
    assert loader.report.examples["row names no audio"] == ["mixed.csv:7"]


def test_zir_data_inspect_reads_an_audio_table(clips, capsys):
    from zir.cli import main

    (clips / "c.csv").write_text("audio,caption\nt/low/0.wav,a low hum\nt/high/1.wav,a high whistle\n")
    assert main(["data", "inspect", str(clips / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "captions    1.0 per recording; words per caption min 3" in out and "audio       8000 Hz (2)" in out
