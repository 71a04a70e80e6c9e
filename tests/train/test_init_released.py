"""`model.init` from a released checkpoint: the CLIP recipe continues a transformers CLIP (and an open_clip one)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import FIXTURES, metrics_rows
from zir.config import load_config
from zir.train.recipe_model import build_model
from zir.recipes import RECIPES_DIR
from zir.train import train
from zir.interop.model_init import adopt_released_towers
from zir.train.init_weights import init_from

TINY = ["train.steps=3", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.ckpt_every=3",
        "train.keep_last=1", "train.precision=fp32"]


@pytest.mark.parametrize("name", ["clip", "open_clip"])
def test_the_clip_recipe_starts_from_the_released_weights(name):
    """Towers, tokenizer, image projection and temperature all come from the checkpoint: equal outputs at step 0."""
    folder = FIXTURES / "interop" / name
    cfg = load_config(RECIPES_DIR / "clip.yaml", TINY + [f"model.init={folder}"])
    adopt_released_towers(cfg)
    assert cfg.model["towers"]["image"]["embed_dim"] == 32 and cfg.model["towers"]["text"]["vocab_size"] == 565
    assert cfg.data.tokenizer == str(folder / "tokenizer.json")
    model = build_model(cfg.model).eval()
    assert init_from(model, cfg.model["init"]) == {"image": "image", "text": "text"}
    ref, clip = load_file(str(folder / "reference.safetensors")), model.objectives["clip"]
    with torch.no_grad():
        image = clip.image_proj(model.towers["image"].pool(model.towers["image"].forward_tokens(ref["images"])))
        text = clip.text_proj(model.towers["text"].pool(model.towers["text"].forward_tokens(ref["input_ids"])))
    assert torch.allclose(image, ref["image_embeds"], atol=1e-5, rtol=0)
    assert torch.allclose(text, ref["text_embeds"], atol=1e-5, rtol=0)
    weights = load_file(str(folder / ("model.safetensors" if name == "clip" else "open_clip_model.safetensors")))
    assert float(clip.loss.logit_scale.detach()) == pytest.approx(float(weights["logit_scale"]))


@pytest.mark.parametrize("name, weights, post_norm", [
    ("clip", "model.safetensors", "vision_model.post_layernorm.weight"),
    ("open_clip", "open_clip_model.safetensors", "visual.ln_post.weight"),
])
def test_zir_train_fine_tunes_a_released_clip_on_shapes_captions(tmp_path, name, weights, post_norm):
    folder = FIXTURES / "interop" / name
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "clip.yaml", TINY + [f"model.init={folder}"]), tmp_path / "run", progress=False)
    rows = metrics_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2", "3"] and all(float(r["loss"]) > 0 for r in rows)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["towers"]["image"]["pre_norm"] is True  # resuming rebuilds the released towers
    assert (tmp_path / "run" / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    trained = load_file(str(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1] / "model.safetensors"))
    start = load_file(str(folder / weights))
    moved = trained["towers.image.fc_norm.weight"] - start[post_norm]
    assert 0 < moved.abs().max() < 0.1  # fine-tuned from the released weights, not from scratch


def test_the_siglip_recipe_starts_from_a_transformers_siglip():
    """Attention-pooled image tower, last-position text tower, the identity as image projection, scale and bias."""
    folder = FIXTURES / "interop" / "siglip"
    cfg = load_config(RECIPES_DIR / "siglip.yaml", TINY + [f"model.init={folder}"])
    adopt_released_towers(cfg)
    model = build_model(cfg.model).eval()
    init_from(model, cfg.model["init"])
    ref, siglip = load_file(str(folder / "reference.safetensors")), model.objectives["siglip"]
    image, text = model.towers["image"], model.towers["text"]
    with torch.no_grad():
        assert torch.allclose(siglip.image_proj(image.pool(image.forward_tokens(ref["images"]))), ref["image_embeds"],
                              atol=1e-5, rtol=0)
        assert torch.allclose(siglip.text_proj(text.pool(text.forward_tokens(ref["input_ids"]))), ref["text_embeds"],
                              atol=1e-5, rtol=0)
    hf = load_file(str(folder / "model.safetensors"))
    assert float(siglip.loss.logit_bias.detach()) == pytest.approx(float(hf["logit_bias"]))


def test_lit_locks_the_released_image_tower_and_trains_the_text_side(tmp_path):
    """LiT's main setting: a pretrained image tower locked (model.towers.image.locked=true), the rest trained."""
    folder = FIXTURES / "interop" / "clip"
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "clip.yaml", TINY + [f"model.init={folder}", "model.towers.image.locked=true"]),
          tmp_path / "run", progress=False)
    trained = load_file(str(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1] / "model.safetensors"))
    start = load_file(str(folder / "model.safetensors"))
    assert torch.equal(trained["towers.image.fc_norm.weight"], start["vision_model.post_layernorm.weight"])
    assert torch.equal(trained["towers.image.cls_token"].reshape(-1), start["vision_model.embeddings.class_embedding"])
    assert not torch.equal(trained["towers.text.norm.weight"], start["text_model.final_layer_norm.weight"])
    assert not torch.equal(trained["objectives.clip.image_proj.weight"], start["visual_projection.weight"])
