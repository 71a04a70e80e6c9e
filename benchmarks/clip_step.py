"""CLIP training-step throughput at FLIP image-token keep ratios: image-text pairs/s and the ratio to keep 1.0.

One CLIP model per keep ratio (same seed, same towers) runs full training steps (encode once, loss,
backward, AdamW) on a synthetic batch: random images, random token ids, a random patch mask per keep
ratio. After warm-up the candidates are timed one step each in turn, the order rotating every round, and
the table shows the median pairs/s over the rounds; alternating keeps load from other processes on a
shared machine from favouring one candidate. `--clock cpu` divides by this process's CPU time instead.

    PYTHONPATH=src python benchmarks/clip_step.py --image vit_tiny_patch8_64 --text text_micro --batch 64
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import zir.objectives.clip  # noqa: F401  (registers clip)
from zir.data.masking import random_mask
from zir.data.plan import Batch
from zir.model import build_model


def make_batch(model, batch: int, keep: float, seed: int) -> Batch:
    """A synthetic batch with the views the model's plan asks for."""
    g = torch.Generator().manual_seed(seed)
    image = model.towers["image"]
    h, w = image.patch_embed.img_size
    text = model.towers["text"]
    views = {"image": torch.randn(batch, 3, h, w, generator=g)}
    ids = torch.randint(3, text.vocab_size, (batch, text.context_length), generator=g)
    ids[:, -1] = 2
    masks = {}
    if keep < 1.0:
        masks[("image", "mask")] = random_mask(batch, image.patch_embed.grid_size, 1.0 - keep, seed)
    return Batch(views, masks, {"text_0": ids}, {}, torch.zeros(batch, dtype=torch.long), [str(i) for i in range(batch)])


def main() -> None:
    """Parse arguments, time the candidates alternately, print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="vit_tiny_patch8_64")
    p.add_argument("--text", default="text_micro")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--keeps", default="1.0,0.5,0.25")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keeps = [float(k) for k in args.keeps.split(",")]
    cands = []
    for keep in keeps:
        torch.manual_seed(0)
        model = build_model({"towers": {"image": {"model": args.image}, "text": {"model": args.text}},
                             "objectives": {"clip": {"keep": keep}}}).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cands.append((keep, model, opt, make_batch(model, args.batch, keep, 0)))

    def step(model, opt, batch) -> float:
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        t = clock()
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return clock() - t

    for _ in range(args.warmup):
        for _, model, opt, batch in cands:
            step(model, opt, batch)
    times: dict[float, list[float]] = {k: [] for k in keeps}
    for r in range(args.rounds):
        order = cands[r % len(cands):] + cands[:r % len(cands)]
        for keep, model, opt, batch in order:
            times[keep].append(step(model, opt, batch))
    base = args.batch / statistics.median(times[keeps[0]])
    grid = cands[0][1].towers["image"].patch_embed.grid_size
    print(f"CLIP step ({args.image} + {args.text}, batch {args.batch}, {grid[0] * grid[1]} patches, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.rounds}; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__})\n")
    print("| keep | image tokens | pairs/s | vs keep 1.0 |")
    print("|---:|---:|---:|---:|")
    for keep in keeps:
        rate = args.batch / statistics.median(times[keep])
        tokens = 1 + round(keep * grid[0] * grid[1])
        print(f"| {keep:.2f} | {tokens} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
