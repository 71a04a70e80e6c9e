"""Training-step time of the self-supervised objectives alone and combined, and MAE's masked-encoder speed-up.

Prints two markdown tables:
1. one optimiser step (forward, backward, AdamW, after_step) per objective set, with the tower forwards the
   plan runs per step, the median of `--reps` steps on a fixed batch;
2. the image tower's forward+backward on visible patches only (MAE, mask 0.75) against all patches.

    .venv/bin/python benchmarks/ssl_step.py --threads 1 --clock cpu
    .venv/bin/python benchmarks/ssl_step.py --recipes clip,unified,coca,mae,dino --reps 10   # shipped recipes
    .venv/bin/python benchmarks/ssl_step.py --recipes clip,unified,unified:model.objectives.coca.caption_fraction=0.25 \
        --scale arithmetic --reps 5   # a recipe with dotted overrides; towers where arithmetic dominates
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import NamedTuple

import torch

from zir.data import ViewCollate, ViewPlan
from zir.data.masking import random_mask
from zir.data.plan import Item
from zir.model import build_model
from zir.models import create_model

SETS = {
    "mae": {"mae": {}},
    "simclr": {"simclr": {}},
    "dino (2 global + 6 local)": {"dino": {}},
    "dino, stack_views": {"dino": {}},
    "ibot": {"ibot": {}},
    "dinov2 (dino + ibot + koleo)": {"ibot": {}, "dino": {"fill": "ibot"}, "koleo": {"weight": 0.1, "fill": "ibot"}},
    "simclr + mae": {"simclr": {}, "mae": {}},
    "mae + dino + simclr": {"mae": {}, "dino": {}, "simclr": {}},
}


def batch_for(plan: ViewPlan, batch_size: int) -> object:
    """A batch of random images with the plan's views and masks."""
    g = torch.Generator().manual_seed(0)
    items = [Item(str(i), torch.randint(0, 256, (3, plan.size, plan.size), generator=g, dtype=torch.uint8), 0, ["x"])
             for i in range(batch_size)]
    return ViewCollate(plan)(items)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.process_time


def step_times(model_name: str, batch_size: int, reps: int) -> list[tuple[str, int, int, int, float]]:
    """(set, student forwards, teacher forwards, tower calls, median ms per step) for each objective set."""
    rows = []
    for label, objectives in SETS.items():
        torch.manual_seed(0)
        stack = "stack_views" in label
        model = build_model({"towers": {"image": {"model": model_name}}, "objectives": objectives, "stack_views": stack})
        batch = batch_for(model.view_plan(), batch_size)
        opt = torch.optim.AdamW(model.param_groups(0.05, base_lr=1e-4))
        times = []
        for step in range(reps + 1):
            t0 = clock()
            out = model(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            model.after_step(step, reps + 1)
            if step:  # the first step warms up allocators and kernels
                times.append(clock() - t0)
        student = sum(f.tower in model.towers for f in model.plan_forwards)
        teacher = len(model.plan_forwards) - student
        rows.append((label, student, teacher, len(model.plan_calls), 1000 * statistics.median(times)))
    return rows


def encoder_speedup(model_name: str, batch_size: int, reps: int, ratio: float = 0.75) -> tuple[float, float, int, int]:
    """Median ms of the tower's forward+backward on visible patches only and on all patches, alternated."""
    torch.manual_seed(0)
    tower = create_model(model_name, num_classes=0)
    size = tower.patch_embed.grid_size[0] * tower.patch_embed.patch_size[0]
    x = torch.randn(batch_size, 3, size, size)
    keep = random_mask(batch_size, tower.patch_embed.grid_size, ratio, seed=0).keep

    def run(k):
        t0 = clock()
        tower.forward_tokens(x, k).float().pow(2).mean().backward()
        return clock() - t0

    run(keep), run(None)
    masked, full = [], []
    for _ in range(reps):
        masked.append(run(keep))
        full.append(run(None))
    return 1000 * statistics.median(masked), 1000 * statistics.median(full), keep.shape[1], tower.patch_embed.num_patches


def knn_after_training(model_name: str, steps: int, batch_size: int, label: str = "shape") -> list[tuple[str, float, float]]:
    """(objectives, loss over the first / last tenth of steps, k-NN top-1 %) after `steps` on shapes, and at init."""
    from zir.data import make_loader, open_source
    from zir.eval import evaluate_knn

    train = open_source("shapes", split="train", n=4000, label=label)
    val = open_source("shapes", split="val", n=1000, label=label)

    @torch.no_grad()
    def features(tower, source):
        tower.eval()
        feats, labels = [], []
        for b in make_loader(source, ViewPlan.from_dict({"global": 1, "pipeline": "none"}), 250, shuffle=False, drop_last=False):
            feats.append(tower.pool(tower.forward_tokens(b.views["global_0"])))
            labels.append(b.labels)
        tower.train()
        return torch.cat(feats), torch.cat(labels)

    rows = []
    for label_set, objectives in [("random init", None), ("mae", {"mae": {}}), ("simclr", {"simclr": {}}),
                                  ("dino", {"dino": {}}), ("mae + dino + simclr", {"mae": {}, "dino": {}, "simclr": {}})]:
        torch.manual_seed(0)
        model = build_model({"towers": {"image": {"model": model_name}}, "objectives": objectives or {"mae": {}}})
        first = last = float("nan")
        if objectives:
            loader = make_loader(train, model.view_plan(), batch_size)
            opt = torch.optim.AdamW(model.param_groups(0.05, base_lr=5e-4))
            losses, step = [], 0
            while step < steps:
                for batch in loader:
                    out = model(batch)
                    opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
                    opt.step()
                    model.after_step(step, steps)
                    losses.append(out.loss.item())
                    step += 1
                    if step >= steps:
                        break
            tenth = max(1, steps // 10)
            first, last = statistics.mean(losses[:tenth]), statistics.mean(losses[-tenth:])
        tower = model.towers["image"]
        acc = evaluate_knn(*features(tower, train), *features(tower, val))["top1"]
        rows.append((label_set, first, last, acc))
        print(f"| {label_set} | {first:.3f} -> {last:.3f} | {acc:.1f} |", flush=True)
    return rows


# Tower sizes for --scale. "shipped": the recipes as they are (at CPU scale a 16-token nano tower, where a
# step is a few hundred small matrix products). "arithmetic": ViT-Ti's width at 32 px (64 tokens), 6 layers,
# and a 4-layer text tower as wide, where the towers' arithmetic dominates a step, as it does at real sizes.
SCALES = {
    "shipped": {},
    "arithmetic": {"image": {"model": "vit_tiny_patch4_32", "depth": 6, "img_size": 32},
                   "text": {"width": 192, "depth": 4, "num_heads": 3, "embed_dim": 192}, "size": 32},
}


def scaled(cfg, scale: str) -> dict:
    """The recipe's model section with the towers of `scale` (image and text towers by those names), and
    its data options at that scale's image side."""
    import copy

    model = copy.deepcopy(cfg.model)
    sizes = SCALES[scale]
    for name in ("image", "text"):
        if name in sizes and name in model["towers"]:
            tower = model["towers"][name]
            tower = {"model": tower} if isinstance(tower, str) else tower
            model["towers"][name] = {**tower, **sizes[name]}
    if "size" in sizes:
        cfg.data.options["size"] = sizes["size"]
    return model


def count_cpu_attention_flops() -> None:
    """Teach torch's FLOP counter the CPU kernels of fused attention (it knows the GPU ones, same arguments)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    for cpu_op, gpu_op in ((aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention),
                           (aten._scaled_dot_product_flash_attention_for_cpu_backward,
                            aten._scaled_dot_product_flash_attention_backward)):
        if cpu_op not in fc.flop_registry:
            fc.register_flop_formula(cpu_op, get_raw=True)(fc.flop_registry[gpu_op])


def step_flops(model, batch, amp) -> int:
    """Floating-point operations of one forward and backward (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        with amp:
            out = model(batch)
        out.loss.float().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class Cost(NamedTuple):
    """One timed phase of a recipe: `share` of training it spans; `gflop` per sample, forward and backward."""

    label: str
    batch: int
    forwards: int
    ms: float
    rate: float
    share: float
    gflop: float


class Trainee:
    """One recipe in one phase, training as it would: its own model, loader (epoch after epoch), AdamW."""

    def __init__(self, label_name: str, phase: int, scale: str, precision: str) -> None:
        from contextlib import nullcontext
        from zir.config import load_config
        from zir.data import load_tokenizer, open_source
        from zir.data.loader import Loader
        from zir.data.tokenizer import text_context
        from zir.recipes import tokenizer_path

        name, *overrides = label_name.split(":")
        cfg = load_config(name, overrides)  # a shipped recipe, its tokenizer by shipped name
        torch.manual_seed(0)
        self.model = model = build_model(scaled(cfg, scale))
        plan = model.view_plan()
        for key, value in cfg.data.plan.items():
            setattr(plan, key, value)
        tokenizer = load_tokenizer(tokenizer_path(cfg.data.tokenizer), context_length=text_context(model)) if cfg.data.tokenizer else None
        epoch = Loader(open_source(cfg.data.source, split="train", **cfg.data.options), plan, cfg.data.batch_size,
                       tokenizer=tokenizer, shuffle=True, drop_last=True)
        self.loader = (batch for _ in iter(int, 1) for batch in epoch)  # the loading is timed too
        self.opt = torch.optim.AdamW(model.param_groups(0.05, base_lr=1e-4))
        self.amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        self.batch_size = cfg.data.batch_size
        late = max((p.start for p in model.phases.values()), default=0.0)
        self.share = (1.0 - late) if phase else (late or 1.0)  # of training: before the latest start, after it
        self.label = f"{label_name}, all objectives on" if phase else label_name
        self.step_index = 999 if phase else 0  # of 1000 steps
        if phase:
            model.after_step(self.step_index - 1, 1000)  # the next step is in the second phase
        self.batch = None

    def step(self) -> float:
        """One timed optimiser step (loading, forward, backward, AdamW, after_step); seconds on the clock."""
        t0 = clock()
        self.batch = next(self.loader)
        with self.amp:
            out = self.model(self.batch)
        self.opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        self.opt.step()
        self.model.after_step(self.step_index, 1000)
        self.step_index += 1
        return clock() - t0

    def cost(self, times: list[float]) -> Cost:
        """This phase's row: median step time, the tower forwards it runs, FLOPs per sample."""
        model, ms = self.model, 1000 * statistics.median(times)
        weights = model.active_weights()
        forwards = len({f for n, o in model.objectives.items() if weights[n] or not model.weights[n]
                        for f in o.forwards()})  # the tower forwards this phase runs
        gflop = step_flops(model, self.batch, self.amp) / self.batch_size / 1e9
        return Cost(self.label, self.batch_size, forwards, ms, self.batch_size / ms * 1000, self.share, gflop)


def recipe_costs(names: list[str], reps: int, precision: str, scale: str = "shipped") -> list[Cost]:
    """Step costs of shipped recipes as they train: the recipe's own model, data, batch and views, the loader's
    augmentation included, AdamW, after_step; and the arithmetic of a step (FLOPs, forward and backward).
    A name may carry dotted overrides: `unified:model.objectives.coca.caption_fraction=0.25`. A recipe whose
    objectives start late is timed in both phases (each its own model) and over a run: the phases weighted by
    their share of training (the latest `start` of its objectives; a ramp counts as on). The steps of all
    recipes and phases take turns, so a machine whose load drifts slows them alike."""
    trainees: list[list[Trainee]] = []
    for label_name in names:
        first = Trainee(label_name, 0, scale, precision)
        trainees.append([first] + ([Trainee(label_name, 1, scale, precision)] if first.model.phased else []))
    flat = [t for phases in trainees for t in phases]
    for t in flat:
        t.step()  # warms up allocators and kernels
    times: dict[int, list[float]] = {id(t): [] for t in flat}
    for _ in range(reps):
        for t in flat:
            times[id(t)].append(t.step())
    rows = []
    for label_name, phases in zip(names, trainees):
        timed = [t.cost(times[id(t)]) for t in phases]
        if len(timed) > 1:
            ms = sum(row.ms * row.share for row in timed)
            gflop = sum(row.gflop * row.share for row in timed)
            timed.append(Cost(f"{label_name}, run average", timed[0].batch, 0, ms, timed[0].batch / ms * 1000, 1.0, gflop))
        rows += timed
    return rows


def main() -> None:
    """Run both measurements and print markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_micro_patch4_32", help="image tower for the step times")
    ap.add_argument("--encoders", default="vit_micro_patch4_32,vit_tiny_patch4_32,vit_micro_patch8_64",
                    help="towers for the MAE encoder comparison, comma-separated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: this process's CPU time (steadier on a shared machine with 1 thread); wall: elapsed")
    ap.add_argument("--knn-steps", type=int, default=0,
                    help="also train each objective this many steps on shapes and report k-NN top-1 on shapes:val")
    ap.add_argument("--recipes", default="",
                    help="instead: shipped recipes (e.g. clip,unified) as they train, step cost and samples per CPU-second")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="with --recipes: autocast or not")
    ap.add_argument("--scale", choices=sorted(SCALES), default="shipped",
                    help="with --recipes: the recipes' own towers, or wider, deeper ones where arithmetic dominates")
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if args.recipes:
        print(f"shipped recipes as they train, towers at {args.scale} scale, {args.precision}, {cpu}, "
              f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {args.clock} clock, "
              f"median of {args.reps} steps\n")
        print("| recipe | batch | tower forwards | ms per step | samples per CPU-second | cost per sample vs first "
              "| GFLOP per sample | FLOPs vs first |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
        rows = recipe_costs(args.recipes.split(","), args.reps, args.precision, args.scale)
        for r in rows:
            print(f"| {r.label} | {r.batch} | {r.forwards or ''} | {r.ms:.0f} | {r.rate:.0f} | {rows[0].rate / r.rate:.2f}x "
                  f"| {r.gflop:.3f} | {r.gflop / rows[0].gflop:.2f}x |", flush=True)
        return
    if args.knn_steps:
        print(f"{args.model}, {args.knn_steps} steps of batch {args.batch_size} on shapes (4000 images), "
              "k-NN (k=20, T=0.07) on shapes:val (1000), label: shape\n")
        print("| objectives | loss, first -> last tenth of steps | k-NN top-1 % |")
        print("|---|---:|---:|", flush=True)
        knn_after_training(args.model, args.knn_steps, args.batch_size)
        return
    print(f"{args.model}, batch {args.batch_size}, fp32, {cpu}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, {args.clock} clock, median of {args.reps}\n", flush=True)
    print("| objectives | forwards (student + teacher) | tower calls | ms per step |")
    print("|---|---:|---:|---:|")
    for label, student, teacher, calls, ms in step_times(args.model, args.batch_size, args.reps):
        print(f"| {label} | {student} + {teacher} | {calls} | {ms:.0f} |", flush=True)
    print("\n| tower | visible / all patches | fwd+bwd ms, mask 0.75 | fwd+bwd ms, all patches | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name in args.encoders.split(","):
        masked, full, k, n = encoder_speedup(name, args.batch_size, args.reps)
        print(f"| {name} | {k} / {n} | {masked:.1f} | {full:.1f} | {full / masked:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
