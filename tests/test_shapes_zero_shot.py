"""Short CPU runs of the image-text recipes learn *shape*, not only colour (issue #6's shapes criterion).

Each test trains a shipped recipe through `zir.train.train`, at test scale: a nano conv-stem image tower
and a nano text tower on 16x16 single-object shapes drawn 2.5x larger (`object_scale`, so a 2-layer tower
can tell the shapes apart at all), batch 256. Then `zir.eval.run_eval.evaluate_run` scores zero-shot shape
on 500 test images with the recipe's own text tower: five shapes, chance 20%. With 500 images one standard
error at chance is 1.8 points, so the 40% thresholds below sit 11 standard errors above chance.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from zir.config import load_config
from zir.data import ShapesSource, load_tokenizer, make_loader
from zir.data.shapes import SHAPES, _SHAPE_WORDS
from zir.eval.run_eval import evaluate_run, load_run
from zir.objectives.coca import generate_captions
from zir.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = {"size": 16, "objects": [1, 1], "object_scale": 2.5, "n": 4000}
# docs/cross_modal.md gives the same settings as a `zir train` command line
QUICK = [
    "model.towers.image={model: vit_nano_convstem_patch4_32, img_size: 16}", "model.towers.text.model=text_nano",
    "data.options={size: 16, objects: [1, 1], object_scale: 2.5, n: 4000}", "data.batch_size=256",
    "optim.lr=2e-3", "optim.warmup_steps=20", "optim.schedule=constant", "optim.eps=1e-8", "train.threads=1",
]


def quick_config(name: str, steps: int):
    """The shipped recipe `name` at test scale (see the module docstring)."""
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", [*QUICK, f"train.steps={steps}", f"train.ckpt_every={steps}",
                                                          f"data.tokenizer={ROOT / 'configs' / 'shapes_tokenizer.json'}"])
    assert cfg.data.options == DATA
    return cfg


def zero_shot(run: Path) -> dict[str, float]:
    """Zero-shot top-1 on the test split's shape (the recipes' default label), as `zir eval` reports it."""
    res = evaluate_run(run, tasks="zeroshot", limit=500, write=False)["zeroshot"]
    assert res["n_test"] == 500 and res["classes"] == len(SHAPES)
    return res["top1"]


@pytest.mark.long(seconds=150)
def test_short_clip_run_classifies_shape_zero_shot(tmp_path):
    # measured: 400 steps (~2 CPU-minutes) reach 58.0% zero-shot shape (chance 20%)
    cfg = quick_config("clip", 400)
    torch.manual_seed(0)
    train(cfg, tmp_path / "run", progress=False)
    assert zero_shot(tmp_path / "run") > 40.0


def _names_the_shape(caption: str) -> set[int]:
    return {k for k, words in enumerate(_SHAPE_WORDS.values()) if any(re.search(rf"\b{w}\b", caption) for w in words)}


@pytest.mark.long(seconds=280)
def test_short_coca_run_classifies_shape_and_captions_name_it(tmp_path):
    # measured: 400 steps (~4 CPU-minutes): zero-shot shape 53.4%, and greedy captions name exactly the
    # right shape for 83% of 150 test images (a caption names one of five shapes: chance 20%)
    cfg = quick_config("coca", 400)
    torch.manual_seed(0)
    train(cfg, tmp_path / "run", progress=False)
    assert zero_shot(tmp_path / "run") > 40.0
    run = load_run(tmp_path / "run")
    test = ShapesSource("test", n=150, **{k: v for k, v in DATA.items() if k != "n"})
    batch = next(iter(make_loader(test, {"global": 0, "image": 1, "pipeline": "none"}, 150)))
    captions = generate_captions(run.model, batch.views["image"], load_tokenizer(ROOT / "configs" / "shapes_tokenizer.json"))
    right = sum(_names_the_shape(c) == {int(y)} for c, y in zip(captions, batch.labels))
    assert right / len(captions) > 0.50, captions[:5]
