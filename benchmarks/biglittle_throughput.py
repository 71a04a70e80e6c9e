"""big.LITTLE ViT inference throughput at several keep ratios, beside the plain ViT and ToMe, on one CPU thread.

All towers share the big ViT's shape (width, depth, heads, patch size at 32x32): the plain ViT, the same ViT
with ToMe merging r tokens per block, and `BigLittleViT` at each keep ratio (little width 32, one head).
Weights are random: throughput depends on the architecture, not on what was learnt.

    OMP_NUM_THREADS=1 python benchmarks/biglittle_throughput.py --patch 2 --keep 1.0,0.5,0.25 --tome-r 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_scaling import machine, time_once  # noqa: E402

from zir.models.tome import set_token_merging  # noqa: E402
from zir.models.zoo import create_model  # noqa: E402


def towers(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """The compared towers by label, in eval mode."""
    shape = dict(patch_size=args.patch, embed_dim=args.dim, depth=args.depth, num_heads=args.heads)
    built = {"plain ViT": create_model("vit_micro_patch4_32", **shape)}
    for r in args.tome_r:
        built[f"ToMe r={r}"] = set_token_merging(create_model("vit_micro_patch4_32", **shape), r)
    for keep in args.keep:
        built[f"big.LITTLE keep={keep:g}"] = create_model("vit_micro_biglittle_patch4_32", keep_ratio=keep,
                                                          little_dim=args.little_dim, **shape)
    return {label: model.eval() for label, model in built.items()}


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Forward GFLOPs per image (matmuls, as FlopCounterMode counts them)."""
    model.set_attention_impl("math")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x[:1])
    model.set_attention_impl("auto")
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=2, help="patch size on 32x32 images (2: 256 patch tokens)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--little-dim", type=int, default=32)
    parser.add_argument("--keep", type=lambda s: [float(v) for v in s.split(",")], default=[1.0, 0.5, 0.25])
    parser.add_argument("--tome-r", type=lambda s: [int(v) for v in s.split(",") if v], default=[32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = towers(args)
    x = torch.randn(args.batch, 3, 32, 32)
    flops = {label: gflops(model, x) for label, model in models.items()}
    params = {label: sum(p.numel() for p in model.parameters()) for label, model in models.items()}
    seconds: dict[str, list[float]] = {label: [] for label in models}
    with torch.no_grad():
        for _ in range(args.repeats):  # alternate the settings each round, so load drifts hit all alike
            for label, model in models.items():
                seconds[label].append(time_once(lambda: model(x), torch.device("cpu"), args.min_seconds))
    rate = {label: args.batch / statistics.median(s) for label, s in seconds.items()}
    base = rate["plain ViT"]
    print(f"# {machine()}; batch {args.batch}, {(32 // args.patch) ** 2} patch tokens, median of {args.repeats}")
    print("| tower | parameters | GFLOPs / image | images/s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for label in models:
        print(f"| {label} | {params[label]:,} | {flops[label]:.3f} | {rate[label]:.0f} | {rate[label] / base:.2f}x |")


if __name__ == "__main__":
    main()
