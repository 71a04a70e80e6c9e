"""The audio recipes (audio_mae, audio_clip) train a few steps: on a folder of WAVs anywhere, and on the real
FSDD as docs/audio.md writes it (skipped where this machine lacks ../shared/data), then evaluate on FSDD test."""

from __future__ import annotations

import json
import math

import pytest

from helpers import REPO, SHARED, metrics_rows, tone_folder
from zir.cli import main
from zir.config import load_config
from zir.data import load_tokenizer
from zir.data.audio_sources import SPOKEN_WORD_TEMPLATES
from zir.data.sources import templated_captions
from zir.recipes import RECIPES_DIR, TOKENIZERS_DIR
from zir.train import train

AUDIO = ["audio_clip", "audio_mae"]
TINY = ["train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=1", "train.keep_last=1",
        "model.towers.audio.model=ast_nano"]


@pytest.mark.parametrize("name", AUDIO)
def test_audio_recipe_trains_two_steps_on_a_folder_of_wavs(name, tmp_path):
    folder = tone_folder(tmp_path / "wavs", {"zero": 300.0, "one": 900.0, "two": 1800.0}, per_class=4)
    cfg = load_config(RECIPES_DIR / f"{name}.yaml", TINY + [f"data.source={folder}"])
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    rows = metrics_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"] and all(math.isfinite(float(r["loss"])) for r in rows)


def test_every_fsdd_caption_is_whole_words_of_the_shipped_tokenizer_and_fits_the_text_tower():
    cfg = load_config(RECIPES_DIR / "audio_clip.yaml")
    text = cfg.model["towers"]["text"]
    tok = load_tokenizer(TOKENIZERS_DIR / "fsdd.json", context_length=text["context_length"])
    assert tok.vocab_size == text["vocab_size"]
    words = "zero one two three four five six seven eight nine".split()
    captions = [c for w in words for c in templated_captions(w, SPOKEN_WORD_TEMPLATES)]
    ids = tok(captions)
    assert ((ids != tok.pad_id).sum(dim=1) < text["context_length"]).all()
    assert ((tok(words) != tok.pad_id).sum(dim=1) == 3).all()  # start, the digit's word as one token, end


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_the_documented_commands_train_and_evaluate_on_fsdd(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(REPO / "configs" / "audio_clip.yaml"), f"data.data_root={SHARED}", "train.steps=2", "data.batch_size=16",
                 "train.threads=1", "model.towers.audio.model=ast_nano", "--out", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--tasks", "zeroshot,linear,knn", "--limit", "60", "--no-report"]) == 0
    results = json.loads((run / "results.json").read_text())
    for task in ("zeroshot", "linear", "knn"):
        assert results[task]["dataset"] == "fsdd" and results[task]["split"] == "test" and results[task]["tower"] == "audio"
        assert 0 <= results[task]["top1"] <= 100
    assert results["zeroshot"]["classes"] == 10 and results["linear"]["n_test"] == 60


def test_the_knn_monitor_follows_the_audio_tower(tmp_path):
    folder = tone_folder(tmp_path / "wavs", {"zero": 300.0, "one": 900.0, "two": 1800.0}, per_class=6)
    monitor = ["train.monitor_every=1", "train.monitor_samples=8", "train.monitor_k=2"]
    cfg = load_config(RECIPES_DIR / "audio_mae.yaml", TINY + monitor + [f"data.source={folder}"])
    train(cfg, tmp_path / "run", progress=False)
    rows = metrics_rows(tmp_path / "run")
    assert all(0 <= float(r["knn_top1"]) <= 100 for r in rows)
