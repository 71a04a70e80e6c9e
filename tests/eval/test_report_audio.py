"""report.html of an audio run: spectrograms of test recordings with attention rollout over them."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image

from helpers import tone_folder
from zir.cli import main
from zir.config import load_config
from zir.recipes import RECIPES_DIR
from zir.train import train

TINY = ["train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=2", "train.keep_last=1",
        "train.precision=fp32", "model.towers.audio.model=ast_nano"]


def test_the_report_of_an_audio_run_shows_spectrograms_with_rollout(tmp_path, capsys):
    folder = tone_folder(tmp_path / "wavs", {"low": 300.0, "mid": 900.0, "high": 1800.0}, per_class=6)
    torch.manual_seed(0)
    run = tmp_path / "run"
    train(load_config(RECIPES_DIR / "audio_clip.yaml", TINY + [f"data.source={folder}"]), run, progress=False)
    assert main(["eval", str(run), "--tasks", "knn"]) == 0
    page = (run / "report.html").read_text()
    sections = dict(re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, flags=re.S))
    body = sections["Attention and patch features"]
    assert "through the audio tower" in body and "No pictures" not in body
    [png] = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', body)]
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    side = 3 * 64  # ast_nano's 64 mel bins and 64 frames, drawn at 3x under a 14-pixel title, 4 pixels apart
    assert picture.shape[:2] == (4 * (side + 18), 3 * (side + 4))  # four test clips; spectrogram, rollout, blend
    assert picture.std() > 10  # drawn, not a blank canvas
    assert "audio" in sections["MAE reconstructions"] and "audio" in sections["CoCa captions"]
