"""`zir export RUN --format hf`: a transformers-layout folder that zir.load reads back with equal outputs.

That the CLIP and ViT folders also load in transformers was checked once with transformers installed
(docs/interop.md, "Checked with transformers"); transformers is not needed here.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import zir
from zir.cli import main
from zir.config import load_config
from zir.interop import PretrainedModel
from zir.interop.export import swap_token_ids
from zir.recipes import RECIPES_DIR
from zir.train import train
from zir.train.runs import export_run

TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.ckpt_every=2",
        "train.keep_last=1", "train.precision=fp32"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """Two steps of the CLIP recipe with a CLIP-architecture image tower (pre_norm) at 16 px."""
    torch.manual_seed(0)
    cfg = load_config(RECIPES_DIR / "clip.yaml", TINY + ["model.towers.image.model=vit_nano_patch4_32",
                                                         "model.towers.image.pre_norm=true",
                                                         "model.towers.image.global_pool=token"])
    run = tmp_path_factory.mktemp("clip") / "run"
    train(cfg, run, progress=False)
    return run


def _images(size: int = 16) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_a_clip_run_exports_as_clip_model_and_reads_back_equal(clip_run, tmp_path, capsys):
    assert main(["export", str(clip_run), "--format", "hf", "--out", str(tmp_path / "hf"), "--license", "mit"]) == 0
    assert "as clip" in capsys.readouterr().out
    folder = tmp_path / "hf"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "clip" and config["text_config"]["eos_token_id"] != 2
    card = (folder / "README.md").read_text()
    assert "license: mit" in card and "CLIPModel.from_pretrained" in card and "steps" in card

    run_model = zir.load(export_run(clip_run, tmp_path / "zir"))  # the run's own ZirModel
    clip, image, text = run_model.objectives["clip"], run_model.towers["image"], run_model.towers["text"]
    loaded = zir.load(folder)
    assert isinstance(loaded, PretrainedModel)
    captions = ["a red circle", "a big blue square at the top", ""]
    from zir.data import load_tokenizer

    ids = load_tokenizer(clip_run / "tokenizer.json", context_length=text.context_length)(captions)
    with torch.no_grad():
        want_image = clip.image_proj(image.pool(image.forward_tokens(_images())))
        want_text = clip.text_proj(text.pool(text.forward_tokens(ids)))
        got_image, got_text = loaded.encode_image(_images()), loaded.encode_text(captions)
    assert torch.allclose(got_image, want_image, atol=1e-5, rtol=0)
    assert torch.allclose(got_text, want_text, atol=1e-5, rtol=0)
    assert float(loaded.logit_scale.detach()) == pytest.approx(float(clip.loss.logit_scale.detach()))
    assert F.cosine_similarity(got_text, want_text).min() > 0.9999


def test_a_tower_transformers_has_no_class_for_exports_in_zirs_layout(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = load_config(RECIPES_DIR / "clip.yaml", TINY + ["model.towers.image.model=vit_nano_patch4_32",
                                                         "model.towers.image.global_pool=token"])  # only pre_norm differs
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert "zir (" in capsys.readouterr().out and "pre_norm" in (tmp_path / "hf" / "README.md").read_text()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "zir"
    model = zir.load(tmp_path / "hf")
    assert set(model.towers) == {"image", "text"}


def test_swapping_token_ids_keeps_the_tokenizer_consistent():
    from zir.recipes import TOKENIZERS_DIR

    raw = json.loads((TOKENIZERS_DIR / "shapes.json").read_text())
    swapped = swap_token_ids(raw, 2, 434)
    assert swapped["model"]["vocab"]["<|endoftext|>"] == 434
    assert swapped["post_processor"]["special_tokens"]["<|endoftext|>"]["ids"] == [434]
    assert sorted(swapped["model"]["vocab"].values()) == sorted(raw["model"]["vocab"].values())


@pytest.mark.parametrize("recipe, kind", [("mae", "vit"), ("dinov2", "dinov2_with_registers")])
def test_an_image_tower_exports_as_vit_or_dinov2_and_reads_back_equal(recipe, kind, tmp_path):
    """MAE's plain ViT becomes ViTModel; DINOv2's registers (and iBOT's mask token) Dinov2WithRegistersModel."""
    torch.manual_seed(0)
    over = ["model.objectives.ibot.out_dim=64"] if recipe == "dinov2" else []
    train(load_config(RECIPES_DIR / f"{recipe}.yaml", TINY + over), tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == kind
    tower = zir.load(export_run(tmp_path / "run", tmp_path / "zir")).towers["image"]
    loaded = zir.load(tmp_path / "hf")
    images = _images(32)
    with torch.no_grad():
        want = tower.pool(tower.forward_tokens(images))
        assert torch.allclose(loaded.encode_image(images), want, atol=1e-5, rtol=0)
        assert torch.allclose(loaded.towers["image"].forward_tokens(images), tower.forward_tokens(images), atol=1e-5, rtol=0)
