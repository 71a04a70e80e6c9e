"""`zir export RUN --format onnx`: each tower as ONNX with a dynamic batch; onnxruntime agrees within 1e-4.

Needs the dev extras `onnx` and `onnxruntime` (skipped without them); zir itself does not depend on them.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import zir
from zir.cli import main
from zir.config import load_config
from zir.recipes import RECIPES_DIR
from zir.train import train
from zir.train.runs import export_run

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.ckpt_every=2",
        "train.keep_last=1", "train.precision=fp32"]


@pytest.mark.parametrize("recipe", ["clip", "mae"])
def test_onnx_towers_equal_the_run_at_another_batch_size(recipe, tmp_path, capsys):
    torch.manual_seed(0)
    over = ["model.towers.image.model=vit_nano_patch4_32"] if recipe == "clip" else []
    train(load_config(RECIPES_DIR / f"{recipe}.yaml", TINY + over), tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    model = zir.load(export_run(tmp_path / "run", tmp_path / "zir"))
    image = model.towers["image"]
    side = image.img_size[0]
    images = torch.randn(5, 3, side, side, generator=torch.Generator().manual_seed(1))  # exported with a batch of 2
    session = ort.InferenceSession(str(tmp_path / "onnx" / "image.onnx"))
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        want = image.pool(image.forward_tokens(images))
        if recipe == "clip":
            want = model.objectives["clip"].image_proj(want)
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    if recipe == "clip":
        text = model.towers["text"]
        ids = torch.randint(3, text.vocab_size, (7, text.context_length), generator=torch.Generator().manual_seed(2))
        ids[:, 6] = 2  # an end-of-text token, then padding
        ids[:, 7:] = 0
        session = ort.InferenceSession(str(tmp_path / "onnx" / "text.onnx"))
        got = torch.from_numpy(session.run(None, {"input_ids": ids.numpy()})[0])
        with torch.no_grad():
            want = model.objectives["clip"].text_proj(text.pool(text.forward_tokens(ids)))
        assert torch.allclose(got, want, atol=1e-4, rtol=0)


def test_without_onnx_the_command_says_what_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "mae.yaml", TINY), tmp_path / "run", progress=False)
    with pytest.raises(zir.ZirError, match="pip install onnx onnxruntime"):
        from zir.interop.onnx_export import export_onnx

        export_onnx(tmp_path / "run")
