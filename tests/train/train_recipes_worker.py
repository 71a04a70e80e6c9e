"""Train shipped recipes at tiny size in this process group and write one verdict file per recipe.

Run as `torchrun --nproc_per_node 2 train_recipes_worker.py OUT STRATEGY NAME...` (one launch for all
recipes: each launch costs seconds), or call `run_recipe` in-process for one-process references. A NAME
such as `dino@match` trains the recipe with the MATCH overrides: views and captions that do not depend on
which samples share a batch, so that two processes and one process see the same global batch;
`clip@resume` trains as `clip@match`, continues the run for two more steps, exports it and loads the
export. Verdicts are files (OUT/NAME.json from rank 0, OUT/NAME.rankR.json from a failing rank), not
printed lines, because two processes printing at once interleave their output.
"""

from __future__ import annotations

import csv
import faulthandler
import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path

TINY = ["train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32", "train.log_every=1", "data.batch_size=8",
        "data.options.n=32", "data.workers=0"]
# views that do not depend on which samples share a batch: no augmentation, no local crops, and for CLIP
# one caption per image (shapes draws one of five per batch), from the table `write_pairs` leaves in OUT
MATCH = {
    # the patch-stem tower: the shipped conv stem's BatchNorm takes per-rank statistics, as the paper's does
    "clip": ["data.plan.pipeline=none", "model.objectives.clip.image_view=global_0", "data.options={}",
             "model.towers.image={model: vit_nano_patch4_32}"],
    "dino": ["data.plan.pipeline=none", "model.objectives.dino.local_views=0"],
}


def write_pairs(out: Path, n: int = 32) -> Path:
    """OUT/pairs.csv: n shapes images as PNG files, each with its first caption only."""
    from PIL import Image

    from zir.data import open_source

    source = open_source("shapes", size=32, n=n)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    rows = ["image,caption"]
    for i in range(n):
        sample = source.get(i)
        Image.fromarray(sample.image).save(out / "pairs" / f"{i:03d}.png")
        rows.append(f"pairs/{i:03d}.png,{sample.captions[0]}")
    (out / "pairs.csv").write_text("\n".join(rows) + "\n")
    return out / "pairs.csv"


def shipped_recipes() -> list[str]:
    """The shipped recipe names (`zir recipes`)."""
    from zir.recipes import list_recipes

    return list_recipes()


def losses(run: Path) -> list[float]:
    """The `loss` column of a run's metrics.csv."""
    with open(run / "metrics.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def fsdp_units(run: Path) -> list[str]:
    """The modules shard_model makes FSDP units of, for the model of the run's config."""
    from torch.distributed.fsdp import FSDPModule

    from zir.config import load_config
    from zir.model import build_model
    from zir.train.distributed import shard_model

    model = build_model({k: v for k, v in load_config(run / "config.yaml").model.items() if k != "init"})
    shard_model(model)
    return [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]


def run_recipe(spec: str, out: Path, strategy: str = "ddp") -> dict:
    """Train one recipe (spec `name` or `name@match` / `name@resume`) into out/spec; returns its verdict."""
    from zir.train import resume, train
    from zir.train.runs import export_run, load

    name, _, mode = spec.partition("@")
    overrides = TINY + [f"train.strategy={strategy}"]
    if mode in ("match", "resume"):
        overrides += MATCH.get(name, []) + ([f"data.source={out / 'pairs.csv'}"] if name == "clip" else [])
    run = out / spec
    train(name, run, overrides, progress=False)
    verdict = {"losses": losses(run)}
    if strategy == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        verdict["units"] = fsdp_units(run)
    if mode == "resume":
        resume(run, ["train.steps=4"], progress=False)
        verdict["resumed_losses"] = losses(run)
        if int(os.environ.get("RANK", "0")) == 0:
            model = load(export_run(run))
            verdict["exported"] = {k: list(v.shape) for k, v in model.state_dict().items() if "logit_" in k}
    return verdict


def main(out: Path, strategy: str, specs: list[str]) -> int:
    import torch.distributed as dist

    faulthandler.enable()  # a rank that aborts in C++ prints where its Python was
    # a short timeout: a rank that fails leaves the other waiting in a collective
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    status = 0
    for spec in specs:
        try:
            verdict = {"ok": True, **run_recipe(spec, out, strategy)}
        except Exception as err:  # noqa: BLE001 - the verdict names it; the test fails on it
            verdict = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-3000:]}
            status = 1
        if rank == 0 or not verdict["ok"]:
            (out / f"{spec}.rank{rank}.json" if rank else out / f"{spec}.json").write_text(json.dumps(verdict))
        if status:
            break  # the process group may be left waiting; torchrun stops the other rank
    dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:] or shipped_recipes()))
