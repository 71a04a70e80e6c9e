"""Short CPU runs of the shipped image-text recipes learn *shape*, not only colour.

Each test trains a recipe of `configs/` as shipped (a nano conv-stem image tower at 16x16 on single-object
shapes drawn 2.5x larger, a nano text tower, batch 256) through `zir.train.train`, changing only how long it
runs and what makes a run reproducible: the seed, one thread and fp32 (the shipped `precision: auto` would
pick bf16 on some processors). Then `zir.eval.run_eval.evaluate_run` scores zero-shot shape on 500 test
images with the recipe's own text tower: five shapes, chance 20%, one standard error at chance 1.8 points.

Thresholds come from the spread over 5 seeds measured with `python tests/learning/test_shapes_zero_shot.py NAME
STEPS SEEDS` (recorded next to each test, with the processor) and sit far below the lowest seed, and far
above chance: training runs differ from one processor to another in the last bits, and these short runs
leave the colour-only plateau at a step that depends on them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from zir.config import load_config
from zir.data import ShapesSource, load_tokenizer, make_loader
from zir.data.shapes import class_names, named_in
from zir.eval.run_eval import evaluate_run, load_run
from zir.objectives.coca import generate_captions
from zir.recipes import TOKENIZERS_DIR
from zir.train import train

TOKENIZER = TOKENIZERS_DIR / "shapes.json"


# Thresholds (percent) far below the lowest of 5 seeds measured on the processor named at each test, and far
# above chance (20%, one standard error 1.8): 35% is 8 standard errors above it.
THRESHOLD_CLIP = 33.0  # the issue asks 40 at 300 steps: the lowest seed (42.4) is too close to it for a test
THRESHOLD_COCA = 33.0
THRESHOLD_COCA_CAPTIONS = 0.40
THRESHOLD_SIGLIP = 35.0
THRESHOLD_SLIP = 30.0
THRESHOLD_UNIFIED = 40.0
THRESHOLD_COLOUR = 60.0  # colour: six colours, chance 16.7%


def shipped_config(name: str, steps: int, seed: int = 0, overrides: tuple[str, ...] = ()):
    """The shipped recipe `name`, run for `steps` steps, reproducibly (one thread, fp32, a fixed seed);
    `overrides` (such as "optim.lr=3e-3" or "train.precision=bf16") are for exploring from `__main__`."""
    return load_config(name, [f"train.steps={steps}", f"train.ckpt_every={steps}", f"train.seed={seed}",
                              "train.threads=1", "train.precision=fp32", *overrides])


def trained(name: str, steps: int, out: Path, seed: int = 0, overrides: tuple[str, ...] = ()) -> Path:
    """The run folder of `name` trained for `steps` steps."""
    torch.manual_seed(seed)
    train(shipped_config(name, steps, seed, overrides), out, progress=False)
    return out


def zero_shot(run: Path, label: str = "shape") -> float:
    """Zero-shot top-1 on the test split's `label` (shape, the recipes' default, or colour), as `zir eval`
    reports it."""
    options = None
    if label != "shape":  # the run's own options (less the training-set size) with another label
        options = {**{k: v for k, v in load_run(run).config["data"]["options"].items() if k != "n"}, "label": label}
    res = evaluate_run(run, tasks="zeroshot", limit=500, write=False, data_options=options)["zeroshot"]
    assert res["n_test"] == 500 and res["classes"] == len(class_names(label))
    return res["top1"]


def captions_naming_the_shape(run: Path, n: int = 150) -> float:
    """Fraction of `n` test images whose greedy caption names exactly the right shape (chance 20%)."""
    options = {k: v for k, v in load_run(run).config["data"]["options"].items() if k != "n"}
    test = ShapesSource("test", n=n, **options)
    batch = next(iter(make_loader(test, {"global": 0, "image": 1, "image_pipeline": "none"}, n)))
    run_loaded = load_run(run)
    tokenizer = load_tokenizer(TOKENIZER, context_length=run_loaded.model.towers["text"].context_length)
    captions = generate_captions(run_loaded.model, batch.views["image"], tokenizer)
    return sum(named_in(c, "shape") == {int(y)} for c, y in zip(captions, batch.labels)) / len(captions)


@pytest.mark.long(seconds=87)
def test_shipped_clip_recipe_classifies_shape_zero_shot(tmp_path):
    # seeds 0-4, 300 steps, Intel Xeon (Sapphire Rapids, AMX), fp32, 1 thread: 64.2 46.4 42.4 48.8 56.4 (mean 51.6,
    # sd 8.5); 600 steps, seeds 0, 1: 84.6 74.6. Before the recipe pooled the patch tokens' mean and read 10000 images
    # (class token, 4000 images), same machine, 300 steps: 35.2 44.8 36.8 34.2 34.8; AMD EPYC (Zen 4), 600 steps:
    # 61.6 68.6 58.6 65.2 76.2
    assert zero_shot(trained("clip", 300, tmp_path / "run")) > THRESHOLD_CLIP


@pytest.mark.long(seconds=114)
def test_shipped_coca_recipe_classifies_shape_and_its_captions_name_it(tmp_path):
    # seeds 0-4, 300 steps, Intel Xeon (AMX), fp32, 1 thread, mean-pooled tower and 10000 images: zero-shot 51.8 54.6
    # 43.0 60.2 67.4 (mean 55.4, sd 9.1); captions naming the right shape 65.3 69.3 73.3 53.3 82.0%. Before them
    # (class token, 4000 images; AMD EPYC) 500 steps gave 56.6 52.0 79.8 81.4 73.4 and 300 steps 38.2-59.6
    run = trained("coca", 300, tmp_path / "run")
    assert zero_shot(run) > THRESHOLD_COCA
    assert captions_naming_the_shape(run) > THRESHOLD_COCA_CAPTIONS


@pytest.mark.long(seconds=150)
def test_shipped_unified_recipe_classifies_shape_zero_shot(tmp_path):
    # seeds 0-4, 400 steps (the self-supervised terms from step 200), Intel Xeon (AMX), fp32, 1 thread: 75.0 61.2 77.0
    # 71.4 64.2 (mean 69.8, sd 6.8), 106-122 CPU-s of training each; 600 steps gave 83.6 75.0 85.6 80.4 87.2
    assert zero_shot(trained("unified", 400, tmp_path / "run")) > THRESHOLD_UNIFIED


# SigLIP and SLIP: the suite trains each for a few dozen steps, in which the shipped recipe learns colour; their
# shape tests below need 600 steps (2-5 CPU-minutes each) and sit in the `slow` tier (`make test-slow`).

def test_shipped_siglip_recipe_classifies_colour_zero_shot_within_80_steps(tmp_path):
    # seeds 0-4, Intel Xeon (AMX), fp32, 1 thread, 16-20 CPU-s each: 98.2 100.0 100.0 100.0 99.6 (40 steps: 71.0 98.0
    # 93.6 95.8 97.0); shape after 80 steps is still at chance (22.6-34.4)
    assert zero_shot(trained("siglip", 80, tmp_path / "run"), "colour") > THRESHOLD_COLOUR


def test_shipped_slip_recipe_classifies_colour_zero_shot_within_40_steps(tmp_path):
    # seeds 0-4, Intel Xeon (AMX), fp32, 1 thread, 12-16 CPU-s each: 99.8 99.2 99.0 96.6 96.6
    assert zero_shot(trained("slip", 40, tmp_path / "run"), "colour") > THRESHOLD_COLOUR


@pytest.mark.slow
def test_shipped_siglip_recipe_classifies_shape_zero_shot(tmp_path):
    # seeds 0-4, 600 steps, Intel Xeon (AMX), fp32, 1 thread: 58.0 58.0 51.2 71.6 81.4 (mean 64.0, sd 12.2), with the
    # mean-pooled tower and 10000 images; before them (class token, 4000 images; AMD EPYC) 1200 steps gave 54.8 72.0
    # 67.4 (seeds 1 3 4) and 900 steps 60.4 34.2 77.4 26.4 (seeds 0-3): SigLIP leaves the plateau late
    assert zero_shot(trained("siglip", 600, tmp_path / "run")) > THRESHOLD_SIGLIP


@pytest.mark.slow
def test_shipped_slip_recipe_classifies_shape_zero_shot(tmp_path):
    # seeds 0-4, 600 steps, Intel Xeon (AMX), fp32, 1 thread, mean-pooled tower and 10000 images: 67.4 40.8 50.4 48.2
    # 61.2 (mean 53.6, sd 10.6). Before them (class token, 4000 images; AMD EPYC) 800 steps gave 65.8 43.2 59.6 59.8
    # 54.4 and the test trained 1000 steps (7 minutes of a loaded Intel CI run)
    assert zero_shot(trained("slip", 600, tmp_path / "run")) > THRESHOLD_SLIP


if __name__ == "__main__":  # the seed spread behind the thresholds: python tests/learning/test_shapes_zero_shot.py NAME STEPS 0,1,2,3,4 [KEY=VALUE ...]
    import tempfile

    torch.set_num_threads(1)
    name, steps, overrides = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[4:])
    for seed in (int(s) for s in sys.argv[3].split(",")):
        with tempfile.TemporaryDirectory() as folder:
            started = time.process_time()
            run = trained(name, steps, Path(folder) / "run", seed, overrides)
            train_cpu_s = round(time.process_time() - started)
            row = {"recipe": name, "steps": steps, "seed": seed, **({"overrides": list(overrides)} if overrides else {}),
                   "zero_shot": zero_shot(run), "zero_shot_colour": zero_shot(run, "colour"),
                   "train_cpu_s": train_cpu_s}
            if name == "coca":
                row["captions_naming_shape"] = round(100 * captions_naming_the_shape(run), 1)
            print(json.dumps(row), flush=True)
