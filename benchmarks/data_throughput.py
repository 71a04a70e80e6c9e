"""Samples per second of the zir data loader, with 0, 1 and 2 worker processes, for several sources and plans.

    python benchmarks/data_throughput.py                       # all cases, ../shared/data for the real sets
    python benchmarks/data_throughput.py --data-root DIR --batches 20 --workers 0 2

Each case builds full batches of views (augmentation, masks, tokens) exactly as training would receive
them; the first batch (worker start-up) is not timed. Real-data cases are skipped when their shards are
not found. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from zir.data import generate_shapes, make_loader, open_source, train_bpe
from zir.errors import ZirError

CASES = [
    # name, source spec, plan, needs a tokenizer
    ("shapes 64px, SimCLR 2x32", "shapes:train", {"global": 2, "pipeline": "simclr", "size": 32, "patch_size": 4}, False),
    ("shapes 64px, DINO 2x32 + 6x12", "shapes:train", {"global": 2, "local": 6, "pipeline": "dino", "size": 32, "patch_size": 4}, False),
    ("shapes 64px, MAE 1x32 mask 0.75", "shapes:train", {"global": 1, "mask": 0.75, "pipeline": "mae", "size": 32, "patch_size": 4}, False),
    ("cifar10 shards, SimCLR 2x32", "cifar10:train", {"global": 2, "pipeline": "simclr", "size": 32, "patch_size": 4}, False),
    ("flickr8k shards, CLIP 1x64 + text", "flickr8k:train", {"global": 1, "text": 1, "pipeline": "light", "size": 64, "patch_size": 8}, True),
]


def measure(source, plan, batch_size, workers, batches, tokenizer):
    """Samples per second over `batches` batches after the first one."""
    loader = make_loader(source, plan, batch_size, workers=workers, tokenizer=tokenizer)
    it = iter(loader)
    next(it)  # start-up: worker processes, first decode
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            n += len(next(it))
        except StopIteration:
            break
    return n / (time.perf_counter() - start)


def main(argv=None):
    """Parse arguments, run every case and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None, help="folder holding cifar10/ and flickr8k/ (default ../shared/data)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=10, help="timed batches per case")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)

    threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {threads} torch threads, torch {torch.__version__}")
    torch.set_num_threads(1)
    generate_shapes(500)  # warm-up
    start = time.perf_counter()
    generate_shapes(5000, seed=1)
    print(f"shapes generation (64x64, no cache, one core): {5000 / (time.perf_counter() - start):,.0f} images/s")
    torch.set_num_threads(threads)
    print(f"batch {args.batch_size}, {args.batches} timed batches per cell; samples/s\n")
    print("| case | " + " | ".join(f"{w} workers" for w in args.workers) + " |")
    print("|---|" + "---:|" * len(args.workers))
    for name, spec, plan, text in CASES:
        try:
            source = open_source(spec, data_root=args.data_root)
        except ZirError as e:
            print(f"| {name} | skipped: {e} |")
            continue
        tokenizer = None
        if text:
            tokenizer = train_bpe(source.iter_captions(limit=2000), vocab_size=2048, context_length=32)
        cells = [f"{measure(source, plan, args.batch_size, w, args.batches, tokenizer):,.0f}" for w in args.workers]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
