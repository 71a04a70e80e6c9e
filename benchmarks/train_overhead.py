"""What the zir trainer adds over a bare training loop, on the same model, optimizer and batch.

    python benchmarks/train_overhead.py                          # MAE and DINO recipes, vit_micro, batch 64
    python benchmarks/train_overhead.py --recipes mae --steps 40 --rounds 5 --threads 2

The bare loop is forward, backward, global-norm clipping, AdamW step, zero_grad and the objectives'
`after_step`. The trainer runs its whole loop (`Trainer.fit`): learning-rate schedule, the non-finite
guard, the per-step reduction of loss terms, metrics.csv, EMA hooks, signal checks. Both read one fixed
batch (the trainer's through a stream that forks the RNG, as its data stream does), so data loading is
not measured. Time is the process's CPU time (`time.process_time`, the trainer's clock swapped for it),
with one torch thread: on a shared machine wall time mostly measures the neighbours. Rounds alternate
bare and trainer; the table gives the median ms per step over rounds (the first 3 steps of each round not
timed), the overhead of those medians, and the median and range of the rounds' paired overheads (the
spread shows how much of the difference is the machine). A first `null` case (a linear layer on pixels,
whose step costs almost nothing) measures the trainer's fixed cost per step directly; each recipe's row
also gives that fixed cost as a share of its step. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zir.config import apply_overrides, from_dict, load_config
from zir.data import ViewPlan
from zir.models import register_model_factory
import zir.train.trainer
from zir.train.trainer import Trainer

WARM = 3


class FixedStream:
    """One batch forever, behind the same RNG fork the trainer's data stream uses."""

    def __init__(self, batch):
        self.batch, self.epoch = batch, 0

    def __next__(self):
        with torch.random.fork_rng(devices=[]):
            return self.batch

    def position(self):
        return {"epoch": 0, "samples": 0, "batches": 0}


@dataclass
class NullOutput:
    """What a model returns to the trainer."""

    loss: torch.Tensor
    terms: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class NullModel(nn.Module):
    """A linear classifier on raw pixels: a step costs next to nothing, so what remains is the loop's own cost."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def view_plan(self) -> ViewPlan:
        return ViewPlan(global_views=1, pipeline="none", size=32, patch_size=4)

    def forward(self, batch) -> NullOutput:
        loss = F.cross_entropy(self.fc(batch.views["global_0"].flatten(1)), batch.labels)
        return NullOutput(loss, {"ce_loss": loss.detach()}, {})

    def after_step(self, step: int, total_steps: int) -> None:
        pass

    def param_groups(self, weight_decay, layer_decay=None, base_lr=None):
        return [{"params": [self.fc.weight], "weight_decay": weight_decay, "lr": base_lr},
                {"params": [self.fc.bias], "weight_decay": 0.0, "lr": base_lr}]


def null_model(section: dict) -> nn.Module:
    """The factory of the `null` case (model.factory=null, registered below)."""
    return NullModel()


register_model_factory("null", null_model)


def _config(name: str, args):
    overrides = [f"data.batch_size={args.batch_size}", f"train.steps={args.steps}", "train.ckpt_every=0",
                 f"train.threads={args.threads}", "data.options.n=256", "train.log_every=100000"]
    if name == "null":
        raw = {"name": "null", "model": {"factory": "null"}, "data": {"options": {"size": 32}},
               "train": {"steps": 1}}
        return from_dict(apply_overrides(raw, overrides))
    return load_config(name, overrides + [f"model.towers.image.model={args.model}"])


def bare(model, batch, steps: int, cfg) -> list[float]:
    """Per-step seconds of the minimal loop."""
    groups = model.param_groups(cfg.optim.weight_decay, base_lr=cfg.optim.lr)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)
    times = []
    for step in range(steps):
        t0 = time.process_time()
        out = model(batch)
        out.loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.after_step(step, steps)
        times.append(time.process_time() - t0)
    return times[WARM:]


def trainer(cfg, batch, run_dir: Path) -> list[float]:
    """Per-step seconds of Trainer.fit, from the time stamps it writes to metrics.csv."""
    tr = Trainer(cfg, run_dir, progress=False)
    tr.stream = FixedStream(batch)
    tr.fit()
    with open(run_dir / "metrics.csv") as fh:
        rows = fh.read().splitlines()
    header = rows[0].split(",")
    stamps = [float(r.split(",")[header.index("time_s")]) for r in rows[1:]]
    return [b - a for a, b in zip(stamps[WARM - 1:], stamps[WARM:])]


def main(argv=None) -> None:
    """Parse arguments, run the rounds and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="*", default=["mae", "dino"])
    p.add_argument("--model", default="vit_micro_patch4_32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=25, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the trainer stamps metrics.csv with its module's time.perf_counter: give it CPU time instead
    zir.train.trainer.time = types.SimpleNamespace(perf_counter=time.process_time, strftime=time.strftime)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}",
          file=sys.stderr)
    lines = ["| recipe | bare loop, CPU ms/step | zir trainer, CPU ms/step | overhead | paired overhead, median (range) |",
             "|---|---:|---:|---:|---:|"]
    fixed = None
    for name in ["null", *args.recipes]:
        cfg = _config(name, args)
        b_ms, t_ms = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                probe = Trainer(cfg, Path(tmp) / f"probe{r}", progress=False)  # same model, plan and batch as the run
                batch = next(probe.stream)
                torch.manual_seed(0)
                model = probe.model
                b_ms.append(1000 * statistics.median(bare(model, batch, args.steps, cfg)))
                with contextlib.redirect_stdout(sys.stderr):  # its last progress line stays out of the table
                    t_ms.append(1000 * statistics.median(trainer(cfg, batch, Path(tmp) / f"run{r}")))
                print(f"{name} round {r}: bare {b_ms[-1]:.1f} ms, trainer {t_ms[-1]:.1f} ms", file=sys.stderr)
        b, t = statistics.median(b_ms), statistics.median(t_ms)
        paired = [100 * (y - x) / x for x, y in zip(b_ms, t_ms)]
        if name == "null":
            fixed = statistics.median(y - x for x, y in zip(b_ms, t_ms))
            lines.append(f"| null (linear on pixels) | {b:.2f} | {t:.2f} | fixed cost {fixed:+.2f} ms/step | - |")
            continue
        lines.append(f"| {name} | {b:.1f} | {t:.1f} | {100 * (t - b) / b:+.1f}% (fixed cost: {100 * fixed / b:.1f}%) | "
                     f"{statistics.median(paired):+.1f}% ({min(paired):+.0f}% .. {max(paired):+.0f}%) |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
