"""`zir explain RUN FILE.wav`: the recording's spectrogram with attention rollout over it, each --text's zero-shot
score through the text tower, and a one-line error naming a corrupt file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tone, tone_folder
from zir.cli import main
from zir.config import load_config
from zir.data.wav import encode_wav
from zir.eval.explain_audio import read_wav, spectrogram_plan
from zir.eval.run_eval import load_run
from zir.eval.run_loading import scored_tower
from zir.recipes import RECIPES_DIR
from zir.train import train

TINY = ["train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=2", "train.keep_last=1",
        "train.precision=fp32", "model.towers.audio.model=ast_nano"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio_explain")
    folder = tone_folder(root / "wavs", {"zero": 300.0, "one": 900.0}, per_class=4)
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "audio_clip.yaml", TINY + [f"data.source={folder}"]), root / "run", progress=False)
    return root / "run"


def test_a_wav_is_read_as_the_runs_evaluation_view_reads_it(run, tmp_path):
    loaded = load_run(run)
    _, tower = scored_tower(loaded.model, "audio")
    plan = spectrogram_plan(loaded.model, tower, loaded.config)
    path = tmp_path / "tone.wav"
    path.write_bytes(encode_wav(tone(440.0, 0.5, 16000, seed=1), 16000))  # resampled to the tower's 8 kHz
    mel = read_wav(path, plan)
    assert mel.shape == (1, 1, plan.spectrogram.n_mels, plan.spectrogram.frames)
    assert plan.audio_mean == -8.0 and plan.audio_std == 5.1  # the recipe's FSDD statistics
    assert torch.isfinite(mel).all()


def test_explain_writes_the_spectrogram_with_rollout_and_scores_each_text(run, tmp_path, capsys):
    path = tmp_path / "seven.wav"
    path.write_bytes(encode_wav(tone(900.0, 0.4, 8000, seed=2), 8000))
    out = tmp_path / "pic.png"
    assert main(["explain", str(run), str(path), "--out", str(out), "--text", "zero", "--text", "one"]) == 0
    printed = capsys.readouterr().out
    assert "frequency x time" in printed and f"wrote {out}" in printed
    picture = np.asarray(Image.open(out))
    assert picture.shape[0] > 50 and picture.shape[1] > 3 * 50  # three panels side by side
    lines = [ln for ln in printed.splitlines() if ln.strip().endswith(("zero", "one")) and "%" in ln]
    assert len(lines) == 2
    assert sum(float(ln.split()[1].rstrip("%")) for ln in lines) == pytest.approx(100.0, abs=0.2)
    assert (tmp_path / "pic-text.png").is_file()


def test_a_flac_is_read_as_the_same_recording_as_a_wav(run, tmp_path, capsys):
    sf = pytest.importorskip("soundfile")
    wav, flac = tmp_path / "tone.wav", tmp_path / "tone.flac"
    wav.write_bytes(encode_wav(tone(900.0, 0.4, 8000, seed=2), 8000))
    sf.write(flac, sf.read(wav, dtype="float32")[0], 8000, subtype="PCM_16")
    loaded = load_run(run)
    plan = spectrogram_plan(loaded.model, scored_tower(loaded.model, "audio")[1], loaded.config)
    assert torch.equal(read_wav(flac, plan), read_wav(wav, plan))
    assert main(["explain", str(run), str(flac), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").is_file()


def test_a_corrupt_wav_is_one_line_naming_the_file(run, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(encode_wav(tone(300.0, 0.3, 8000, seed=3), 8000)[:60])  # header promises more frames
    assert main(["explain", str(run), str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "truncated" in err


def test_the_documented_command_runs_as_written(run, tmp_path, capsys):
    import re
    import shlex

    from helpers import REPO

    doc = (REPO / "docs" / "audio.md").read_text()
    [command] = [ln for block in re.findall(r"```sh\n(.*?)```", doc, flags=re.S) for ln in block.splitlines()
                 if ln.startswith("zir explain")]
    (tmp_path / "clip.wav").write_bytes(encode_wav(tone(300.0, 0.4, 8000, seed=4), 8000))
    args = [str(run) if a == "runs/audio_clip" else str(tmp_path / a) if a.endswith(".wav") else a
            for a in shlex.split(command)[1:]]
    assert main(args) == 0
    assert (run / "explain" / "clip.png").is_file() and (run / "explain" / "clip-text.png").is_file()
    assert capsys.readouterr().out.count("%") == 3
