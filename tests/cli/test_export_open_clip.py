"""`zir export RUN --format open_clip`: open_clip's state dict of a CLIP pair, read back equal by zir.load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import zir
from helpers import FIXTURES, one_line_error
from zir.cli import main
from zir.config import load_config
from zir.recipes import RECIPES_DIR
from zir.train import train
from zir.train.runs import export_run

TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.precision=fp32",
        "model.towers.image.model=vit_nano_patch4_32", "model.towers.image.pre_norm=true",
        "model.towers.image.global_pool=token"]  # open_clip's ViT pools its class token; the recipe pools the mean


def test_a_clip_run_exports_in_open_clips_layout_and_reads_back_equal(tmp_path, capsys):
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "clip.yaml", TINY + ["model.towers.image.layer_norm_eps=1.0e-5"]), tmp_path / "run",
          progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "open_clip", "--out", str(tmp_path / "oc")]) == 0
    folder = tmp_path / "oc"
    state = load_file(str(folder / "open_clip_model.safetensors"))
    assert set(state) == set(load_file(str(FIXTURES / "interop" / "open_clip" / "open_clip_model.safetensors")))
    config = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    assert config["quick_gelu"] is False and config["text_cfg"]["vocab_size"] == 435

    run = zir.load(export_run(tmp_path / "run", tmp_path / "zir"))
    clip, image, text = run.objectives["clip"], run.towers["image"], run.towers["text"]
    loaded = zir.load(folder)
    captions = ["a red circle", "two blue squares", ""]
    assert (loaded.tokenize(captions).amax(dim=1) == 434).all()  # the end token is the highest id, as open_clip pools
    from zir.data import load_tokenizer

    ids = load_tokenizer(tmp_path / "run" / "tokenizer.json", context_length=text.context_length)(captions)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), clip.image_proj(image.pool(image.forward_tokens(images))),
                              atol=1e-5, rtol=0)
        assert torch.allclose(loaded.encode_text(captions), clip.text_proj(text.pool(text.forward_tokens(ids))),
                              atol=1e-5, rtol=0)


def test_open_clips_layer_norm_epsilon_is_required(tmp_path, capsys):
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "clip.yaml", TINY), tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--format", "open_clip", "--out", str(tmp_path / "oc")]) != 0
    assert "layer_norm_eps: 1.0e-5" in one_line_error(capsys)


@pytest.mark.parametrize("recipe", ["mae"])
def test_a_run_without_a_clip_pair_is_refused(recipe, tmp_path, capsys):
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / f"{recipe}.yaml", TINY[:5]), tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--format", "open_clip"]) != 0
    assert "not a CLIP pair" in one_line_error(capsys)
