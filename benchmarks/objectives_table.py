"""The headline experiment: the unified recipe against each single objective, at equal training time or steps.

Every shipped recipe (`zir recipes`) trains on the same image tower, the unified recipe's (the convolutional-stem
`vit_nano_convstem_patch4_32`), with its own objective and optimiser settings, for the same budget of CPU seconds
(`train.time_budget`, `train.budget_clock=cpu`, one thread each, so runs sharing the machine still get equal
work) or the same number of steps (`--steps`), then is evaluated the same way:

- suite `shapes`: pretrain on built-in shapes as the shipped image-text recipes do (16x16, one object scaled
  2.5x, 10,000 images, with captions); zero-shot shape and colour, linear probe and k-NN of the shape on
  single-object test images, and zero-shot on the compositional split (shape-colour pairs never seen in
  training);
- suite `flickr8k`: pretrain on Flickr8k train photos at the tower's 32x32 (and captions, for the image-text
  objectives); retrieval R@1/5/10 on the 1,000 Flickr8k test images (5,000 captions); linear probe and k-NN
  on CIFAR-10 (transfer: no CIFAR image is seen in pretraining);
- suite `cifar10`: the self-supervised recipes (SSL_OBJECTIVES) pretrain on CIFAR-10 train photos at 32x32;
  linear probe and k-NN (k=20) on the CIFAR-10 test set. The tower keeps the recipe's own tower options
  (I-JEPA's mean-pooled tower without a class token, DINOv2's 4 registers); SimMIM keeps its Swin tower,
  which windowed masking needs, and MoCo v3 gets the shared size with a patch stem (`vit_nano_patch4_32`), whose
  projection its recipe freezes. The random-init row is the shared tower's, measured beside the first run.

Each run also records its training CPU time, so the table gives the step cost (samples per CPU-second).
Runs are folders under --out; a finished run (objectives_table.json present) is not run again, so the
script can be stopped and restarted, and more seeds added later. The table is printed as markdown (mean
and spread over seeds) and written to OUT/table.md.

    .venv/bin/python benchmarks/objectives_table.py --suites shapes --budget 300 --jobs 1
    .venv/bin/python benchmarks/objectives_table.py --suites shapes --steps 300 --out runs/steps300
    .venv/bin/python benchmarks/objectives_table.py --suites cifar10 --budget 300 --out runs/cifar300
    .venv/bin/python benchmarks/objectives_table.py --table-only          # print the table of what has run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from zir.recipes import RECIPES_DIR, TOKENIZERS_DIR

REPO = Path(__file__).resolve().parent.parent
OBJECTIVES = ("unified", "clip", "siglip", "coca", "mae", "simclr", "dino", "ibot", "slip", "lit")
DEFAULT_OBJECTIVES = OBJECTIVES[:8]  # the survey's families; slip and lit on request
# the self-supervised recipes, the likely strongest first (the order the cifar10 suite runs them in)
SSL_OBJECTIVES = ("simclr", "dino", "mae", "byol", "moco_v3", "ibot", "dinov2", "vicreg", "barlow_twins", "simsiam",
                  "ijepa", "simmim_swin")
SUITES = ("shapes", "flickr8k")  # the default; `cifar10` on request (--suites cifar10)
ALL_SUITES = SUITES + ("cifar10",)
# the towers the cifar10 suite does not share: SimMIM's windowed masking needs its Swin tower (its recipe's), and
# MoCo v3's frozen random patch projection needs a patch stem: the shared tower's size with one
OWN_TOWER = {"simmim_swin": None, "moco_v3": {"model": "vit_nano_patch4_32"}}
TOWER_OPTIONS = {"vit_micro_patch4_reg4_32": {"reg_tokens": 4, "embed_prefix": False}}  # what a named tower adds
FLICKR_TOKENIZER = TOKENIZERS_DIR / "flickr8k.json"
SHAPES_EVAL = {"size": 16, "objects": [1, 1], "object_scale": 2.5}  # as the shipped recipes train: one object a picture


# `--scale gpu`: the same experiment at a size a GPU trains in minutes: ViT-S/16 at 96x96 (36 tokens) and a 6-layer
# 384-wide text tower, batch 256, AdamW at 5e-4 (the CPU recipes' 2e-3 suits 64-wide towers), a budget of wall
# seconds on the GPU per run, bf16 autocast. Every other setting is the shipped recipe's.
GPU_SCALE = {
    "image": {"model": "vit_small_patch16_224", "img_size": 96},
    "text": {"model": "text_micro", "width": 384, "depth": 6, "num_heads": 6, "embed_dim": 384, "context_length": 32},
    "batch_size": 256, "workers": 8, "lr": 5.0e-4, "warmup_steps": 50, "precision": "bf16",
}


def recipe_for(objective: str, suite: str, seed: int, budget: float | None, data_root: str,
               steps: int | None = None, scale: str = "cpu", device: str = "auto") -> dict:
    """The recipe of one run: the shipped OBJECTIVE recipe on the unified recipe's image tower and the suite's data
    (at `scale` gpu: on GPU_SCALE's towers, batch and rate, with a wall-clock budget on `device`)."""
    raw = yaml.safe_load((RECIPES_DIR / f"{objective}.yaml").read_text())
    unified = yaml.safe_load((RECIPES_DIR / "unified.yaml").read_text())
    data, model = raw.setdefault("data", {}), raw["model"]
    image = dict(unified["model"]["towers"]["image"])
    text = model.get("towers", {}).get("text")
    if suite == "cifar10":
        own = dict(model["towers"]["image"])
        if objective in OWN_TOWER:
            image = dict(OWN_TOWER[objective] or own)
        else:  # the shared tower with the recipe's own tower options (pooling, class token, registers)
            extra = {k: v for k, v in own.items() if k not in ("model", "img_size")}
            image = {**image, **TOWER_OPTIONS.get(own["model"], {}), **extra}
        image.pop("img_size", None)  # the tower's own 32x32
        data.update(source="cifar10", split="train", data_root=str(Path(data_root).resolve()), options={})
    elif suite == "flickr8k":
        image.pop("img_size", None)  # the tower's own 32x32
        data.update(source="flickr8k", split="train", data_root=str(Path(data_root).resolve()), options={})
        if text is not None and text.get("model", "").startswith("text_"):
            data["tokenizer"] = str(FLICKR_TOKENIZER)
            from zir.data import load_tokenizer

            text["vocab_size"] = load_tokenizer(FLICKR_TOKENIZER).vocab_size
    else:
        data["options"] = dict(unified["data"]["options"])
    model["towers"]["image"] = image
    if objective == "lit":
        from zir.data.tokenizer import pretrained_tokenizer_path

        data["tokenizer"] = str(pretrained_tokenizer_path())
    train = raw.setdefault("train", {})
    if steps:
        train.update(steps=int(steps), epochs=None, time_budget=None)
    else:
        train.update(steps=None, epochs=None, time_budget=float(budget), budget_clock="cpu" if scale == "cpu" else "wall")
    train.update(seed=seed, threads=1, ckpt_every=0, keep_last=1)
    if scale == "gpu":
        gpu = GPU_SCALE
        model["towers"]["image"] = dict(gpu["image"])
        if text is not None and text.get("model", "").startswith("text_"):
            model["towers"]["text"] = {**gpu["text"], "vocab_size": text["vocab_size"]}
        data.update(batch_size=gpu["batch_size"], workers=gpu["workers"])
        raw.setdefault("optim", {}).update(lr=gpu["lr"], warmup_steps=gpu["warmup_steps"])
        train.update(device=device, precision=gpu["precision"], threads=None)
    raw["name"] = f"{objective}-{suite}-s{seed}"
    return raw


def run_one(objective: str, suite: str, seed: int, budget: float | None, data_root: str, out: Path, limit: int,
            steps: int | None = None, scale: str = "cpu", device: str = "auto") -> dict:
    """Train one run (unless its checkpoint exists) and evaluate it; returns and writes its results."""
    from zir.config import from_dict
    from zir.eval.run_eval import evaluate_run
    from zir.train import list_checkpoints, resume, train

    run = out / suite / f"{objective}-s{seed}"
    if list_checkpoints(run / "checkpoints"):
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else resume(run, progress=False)
    else:
        cfg = from_dict(recipe_for(objective, suite, seed, budget, data_root, steps, scale, device))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = train(cfg, run, progress=False)
        summary["train_cpu_s"] = time.process_time() - cpu0  # one thread: the training's CPU time
        summary["train_wall_s"] = time.perf_counter() - wall0
        (run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
    batch = from_dict(recipe_for(objective, suite, seed, budget, data_root, steps, scale, device)).data.batch_size
    res: dict = {"objective": objective, "suite": suite, "seed": seed, "steps": summary["steps"], "batch": batch,
                 "train_cpu_s": summary.get("train_cpu_s"), "budget_spent_s": summary.get("budget_spent_s"),
                 "scale": scale, "train_wall_s": summary.get("train_wall_s"),
                 "wall_s": summary.get("time_s"), "precision": status.get("precision")}
    cross = objective not in ("mae", "dino", "ibot", "simclr")
    if suite == "cifar10":
        res["cifar10"] = evaluate_run(run, "linear,knn", data="cifar10", data_root=data_root, limit=limit, write=False,
                                      baseline=objective == SSL_OBJECTIVES[0] and seed == 0)
    elif suite == "flickr8k":
        if cross:
            res["flickr8k"] = evaluate_run(run, "retrieval", write=False)
        res["cifar10"] = evaluate_run(run, "linear,knn", data="cifar10", data_root=data_root, limit=limit, write=False,
                                      baseline=objective == "unified" and seed == 0)
    else:
        tasks = "zeroshot,linear,knn" if cross else "linear,knn"
        res["shapes"] = evaluate_run(run, tasks, data="shapes", data_options=SHAPES_EVAL, limit=limit, write=False,
                                     baseline=objective == "unified" and seed == 0)
        if cross:
            res["shapes_colour"] = evaluate_run(run, "zeroshot", data="shapes", data_options={**SHAPES_EVAL, "label": "colour"},
                                                limit=limit, write=False, baseline=objective == "unified" and seed == 0)
    (run / "objectives_table.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


# -- the table ----------------------------------------------------------------------------------------

COLUMNS = {
    "flickr8k": [("i2t R@1", "flickr8k", "retrieval", "i2t_R@1"), ("i2t R@5", "flickr8k", "retrieval", "i2t_R@5"),
                 ("i2t R@10", "flickr8k", "retrieval", "i2t_R@10"), ("t2i R@1", "flickr8k", "retrieval", "t2i_R@1"),
                 ("t2i R@5", "flickr8k", "retrieval", "t2i_R@5"), ("t2i R@10", "flickr8k", "retrieval", "t2i_R@10"),
                 ("CIFAR-10 linear", "cifar10", "linear", "top1"), ("CIFAR-10 k-NN", "cifar10", "knn", "top1")],
    "shapes": [("zero-shot shape", "shapes", "zeroshot", "top1"), ("comp shape", "shapes", "zeroshot_comp", "top1"),
               ("zero-shot colour", "shapes_colour", "zeroshot", "top1"),
               ("comp colour", "shapes_colour", "zeroshot_comp", "top1"),
               ("linear shape", "shapes", "linear", "top1"), ("k-NN shape", "shapes", "knn", "top1")],
    "cifar10": [("k-NN", "cifar10", "knn", "top1"), ("linear", "cifar10", "linear", "top1")],
}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(out: Path, suite: str) -> str:
    """Markdown table of one suite: a row per objective (mean ± sd over seeds) and the random-init row."""
    runs = [json.loads(p.read_text()) for p in sorted((out / suite).glob("*/objectives_table.json"))]
    if not runs:
        return f"(no finished {suite} runs under {out})"
    cols = COLUMNS[suite]
    head = "| objective | seeds | steps | samples per s |" + "".join(f" {c[0]} |" for c in cols)
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(cols)]
    for obj in (SSL_OBJECTIVES if suite == "cifar10" else OBJECTIVES):
        mine = [r for r in runs if r["objective"] == obj]
        if not mine:
            continue
        cells = []
        for _, group, task, metric in cols:
            vals = [r[group][task][metric] for r in mine if metric in r.get(group, {}).get(task, {})]
            cells.append(_cell(vals))
        steps = _cell([float(r["steps"]) for r in mine]).split(".")[0] if len(mine) == 1 else \
            f"{statistics.mean(r['steps'] for r in mine):.0f}"
        clock = "train_wall_s" if mine[0].get("scale") == "gpu" else "train_cpu_s"  # samples per GPU-second there
        rates = [r["steps"] * r["batch"] / r[clock] for r in mine if r.get(clock) and r.get("batch")]
        rate = f"{statistics.mean(rates):.0f}" if rates else "-"
        lines.append(f"| {obj} | {len(mine)} | {steps} | {rate} |" + "".join(f" {c} |" for c in cells))
    first = SSL_OBJECTIVES[0] if suite == "cifar10" else "unified"
    base = [r for r in runs if r["objective"] == first and r["seed"] == 0]
    if base:
        cells = []
        for _, group, task, metric in cols:
            v = base[0].get(group, {}).get(task, {}).get("random_init", {}).get(metric)
            cells.append("-" if v is None else f"{v:.1f}")
        towers = "the shared tower" if suite == "cifar10" else "unified's towers"
        lines.append(f"| random init ({towers}) | 1 | 0 | - |" + "".join(f" {c} |" for c in cells))
    return "\n".join(lines)


def span_of_runs(out: Path, suites: list[str]) -> str | None:
    """What the finished runs were given, read from their own config.yaml (steps, or a time budget and its clock),
    so a table printed again with --table-only names the runs' budget rather than this call's --budget."""
    spans = set()
    for suite in suites:
        for done in (out / suite).glob("*/objectives_table.json"):
            cfg = done.parent / "config.yaml"
            train = ((yaml.safe_load(cfg.read_text()) if cfg.is_file() else None) or {}).get("train") or {}
            if train.get("time_budget"):
                clock = "CPU seconds" if train.get("budget_clock") == "cpu" else \
                    f"wall seconds on {train.get('device', 'auto')} (GPU_SCALE)"
                spans.add(f"a budget of {float(train['time_budget']):g} {clock} of training")
            elif train.get("steps"):
                spans.add(f"{int(train['steps'])} steps")
    if not spans:
        return None
    return " or ".join(sorted(spans)) + (" (runs differ)" if len(spans) > 1 else "")


def cpu_name() -> str:
    """The processor's model name (lscpu's), for the record beside the table."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"), help="folder with cifar10/ and flickr8k/")
    ap.add_argument("--out", default="runs/objectives", help="where the runs go")
    ap.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per run")
    ap.add_argument("--steps", type=int, default=None, help="instead of --budget: the same number of steps per run")
    ap.add_argument("--scale", choices=("cpu", "gpu"), default="cpu",
                    help="gpu: ViT-S/16 at 96 px, batch 256, bf16, --budget in wall seconds on --device (GPU_SCALE)")
    ap.add_argument("--device", default="auto", help="with --scale gpu: train.device (auto, cuda, cuda:N, cpu)")
    ap.add_argument("--suites", default=",".join(SUITES), help="any of " + ", ".join(ALL_SUITES))
    ap.add_argument("--objectives", default=None,
                    help=f"default: {','.join(DEFAULT_OBJECTIVES)}; for suite cifar10 {','.join(SSL_OBJECTIVES)}")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds for every objective")
    ap.add_argument("--extra-seeds", default="", help="more seeds, only for --extra-for")
    ap.add_argument("--extra-for", default="unified,clip,mae,coca")
    ap.add_argument("--limit", type=int, default=5000, help="evaluation samples per split at most")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("OBJECTIVE", "SUITE", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.one:
        obj, suite, seed = args.one
        run_one(obj, suite, int(seed), args.budget, args.data_root, out, args.limit, args.steps, args.scale, args.device)
        return
    if not args.table_only:
        todo = []
        seeds = [int(s) for s in args.seeds.split(",") if s]
        extra = [int(s) for s in args.extra_seeds.split(",") if s]
        for seed in seeds + extra:
            for suite in args.suites.split(","):
                default = SSL_OBJECTIVES if suite == "cifar10" else DEFAULT_OBJECTIVES
                for obj in (args.objectives.split(",") if args.objectives else default):
                    if seed in extra and seed not in seeds and obj not in args.extra_for.split(","):
                        continue
                    if obj == "lit" and suite != "flickr8k":
                        continue
                    if not (out / suite / f"{obj}-s{seed}" / "objectives_table.json").is_file():
                        todo.append((obj, suite, seed))
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.scale == "cpu" else dict(os.environ)
        running: list[tuple[subprocess.Popen, tuple, float]] = []
        while todo or running:
            while todo and len(running) < args.jobs:
                job = todo.pop(0)
                log = out / "logs" / f"{job[1]}-{job[0]}-s{job[2]}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, "--one", job[0], job[1], str(job[2]), "--out", str(out),
                       "--budget", str(args.budget), "--data-root", args.data_root, "--limit", str(args.limit)]
                cmd += ["--steps", str(args.steps)] if args.steps else []
                cmd += ["--scale", args.scale, "--device", args.device]
                running.append((subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env), job, time.time()))
            time.sleep(2)
            for proc, job, t0 in list(running):
                if proc.poll() is not None:
                    running.remove((proc, job, t0))
                    state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {out}/logs)"
                    print(f"{job[1]:9s} {job[0]:8s} seed {job[2]}: {state} in {time.time() - t0:.0f} s", flush=True)
    clock = "CPU seconds" if args.scale == "cpu" else f"wall seconds on {args.device} (GPU_SCALE)"
    span = span_of_runs(out, args.suites.split(",")) or \
        (f"{args.steps} steps" if args.steps else f"a budget of {args.budget:g} {clock} of training")
    text = [f"Equal {span} per run; {cpu_name()}, torch {__import__('torch').__version__}.", ""]
    for suite in args.suites.split(","):
        text += [f"### {suite}", "", table(out, suite), ""]
    body = "\n".join(text)
    print(body)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(body + "\n")


if __name__ == "__main__":
    main()
