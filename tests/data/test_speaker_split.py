"""fsdd's `split_by: speaker`: every recording of the held-out speakers (from either of FSDD's shards) is in
`test` and none in `train`; bad options are one ConfigError naming the option."""

from __future__ import annotations

import json

import pytest

from helpers import SHARED, tone, write_shard
from zir.data import open_source
from zir.data.wav import encode_wav
from zir.errors import ConfigError

WORDS = ("zero", "one")


def _fake_fsdd(root):
    """root/fsdd like the real one: train and test shards of 2 digits x 3 speakers (a, b, c), 2 and 1 takes each."""
    (root / "fsdd").mkdir(parents=True)
    (root / "fsdd" / "classes.txt").write_text("\n".join(WORDS) + "\n")
    for split, takes in (("train", (1, 2)), ("test", (0,))):
        samples = []
        for digit, word in enumerate(WORDS):
            for speaker in "abc":
                for take in takes:
                    samples.append({"key": f"{split}_{digit}{speaker}{take}",
                                    "wav": encode_wav(tone(300.0 + 200 * digit, 0.2, 8000, seed=take), 8000),
                                    "cls": str(digit).encode(), "txt": word.encode(),
                                    "json": json.dumps({"digit": digit, "speaker": speaker, "index": take}).encode()})
        write_shard(root / "fsdd" / f"{split}-000000.tar.gz", samples)
    return root


def test_held_out_speakers_are_all_in_test_and_none_in_train(tmp_path):
    root = _fake_fsdd(tmp_path)
    opts = {"split_by": "speaker", "test_speakers": ["b"]}
    train = open_source("fsdd", split="train", data_root=root, **opts)
    test = open_source("fsdd", split="test", data_root=root, **opts)
    assert sorted(set(test.speakers)) == ["b"] and len(test) == 2 * 3  # 2 digits x 3 takes (train and test shards)
    assert "b" not in train.speakers and len(train) == 2 * 2 * 3
    sample = test.get(0)
    assert sample.audio is not None and sample.captions[:2] == [WORDS[sample.label], f"the digit {WORDS[sample.label]}"]
    assert sorted(test.labels().tolist()) == [0, 0, 0, 1, 1, 1]
    own = list(open_source("fsdd", split="test", data_root=root))  # FSDD's own split: every speaker's take 0
    assert len(own) == 6


@pytest.mark.parametrize("opts, words", [({"split_by": "voice"}, "split_by='voice'"),
                                         ({"split_by": "speaker", "test_speakers": "b"}, "test_speakers='b'"),
                                         ({"split_by": "speaker", "test_speakers": ["zed"]}, "zed not among the speakers (a, b, c)")])
def test_bad_speaker_options_name_the_option(tmp_path, opts, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        open_source("fsdd", split="test", data_root=_fake_fsdd(tmp_path), **opts)


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_the_real_fsdd_holds_out_theo():
    test = open_source("fsdd", split="test", data_root=SHARED, split_by="speaker")
    assert set(test.speakers) == {"theo"} and len(test) == 500


@pytest.mark.long(seconds=10)
@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_the_documented_commands_run_in_short(tmp_path, monkeypatch, capsys):
    import re
    import shlex

    from helpers import REPO
    from zir.cli import main

    doc = (REPO / "docs" / "audio.md").read_text()
    section = doc[doc.index("## Held-out speakers"):doc.index("## Measured")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2  # fsdd by speaker (audio_clip), av_digits by speaker (imagebind)
    short = {"train": ["train.steps=2", "data.batch_size=16", "train.threads=1", "model.towers.audio.model=ast_nano",
                       "--no-progress"], "eval": ["--limit", "30", "--no-report"]}
    monkeypatch.chdir(REPO)
    for line in "".join(blocks).splitlines():
        args = [a.replace("/work/shared/data", str(SHARED)) for a in shlex.split(line)[1:]]
        args = [str(tmp_path / a) if a.startswith("runs/") else a for a in args]
        assert main(args + short[args[0]]) == 0, line
    out = capsys.readouterr().out
    assert "a2t_R@1" in out and "knn" in out and "i2a_R@1" in out


def test_av_digits_split_by_speaker_keeps_every_test_speaker_recording_out_of_train(tmp_path):
    root = _fake_fsdd(tmp_path)
    opts = {"split_by": "speaker", "test_speakers": ["a", "c"]}
    train = open_source("av_digits", split="train", data_root=root, size=16, **opts)
    test = open_source("av_digits", split="test", data_root=root, size=16, **opts)
    assert set(test.speakers) == {"a", "c"} and set(train.speakers) == {"b"} and (len(train), len(test)) == (6, 12)
    assert not {r.key.split(":")[1] for r in train.recordings} & {r.key.split(":")[1] for r in test.recordings}
    assert all(k[-2] in "ac" for k in (r.key for r in test.recordings))  # keys name the speaker: train_0a1
    assert not set(train.image_keys) & set(test.image_keys)
    s = test.get(0)
    assert s.image.shape == (16, 16, 3) and s.audio is not None and test.name == "av_digits:test:by-speaker"
    assert open_source("av_digits", split="test", data_root=root).speakers is None  # FSDD's own split by default
    with pytest.raises(ConfigError, match=r"test_speakers: zed not among the speakers \(a, b, c\)"):
        open_source("av_digits", split="test", data_root=root, split_by="speaker", test_speakers=["zed"])
