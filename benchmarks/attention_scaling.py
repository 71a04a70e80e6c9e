"""How attention cost grows with the number of tokens: global softmax (ViT), shifted windows (Swin),
separable (MobileViT v2, linear), cascaded group (EfficientViT) and less (LaViT) attention.

Each mechanism is measured as one attention layer (input projection, attention, output projection; Swin's
layer includes its cyclic shift, window partition and mask) on a (B, N, D) batch whose N tokens form a
square grid: 64, 256, 1024 and 4096 tokens = 8x8 ... 64x64. A less-attention (LaViT) layer is a block that
reuses an earlier block's scores: it is timed with fixed incoming (B, H, N, N) scores that take gradients
(as the earlier block's would), with head mixing (zir's default) or the paper's N x N token maps (whose
2 H N^3 cost is measured up to `--token-maps-max` tokens only). For every (mechanism, N) the script reports

- forward time (under `torch.no_grad()`) and forward+backward time, the median over repetitions that are
  alternated between mechanisms (so load from other processes hits all alike);
- peak memory of one forward+backward above what was live before it. CUDA: `max_memory_allocated`. CPU: the
  peak of the bytes of tensor storage created during the step and still alive, counted exactly by a
  `TorchDispatchMode` that sees every operator's outputs (forward and backward) and a finalizer on each
  new storage (so it counts tensors, not allocator caching or the process's RSS);
- the fitted exponent k of time ~ N^k: the least-squares slope of log(time) on log(N) over the three largest
  sizes (256..4096), where fixed overheads no longer dominate.

Run::

    .venv/bin/python benchmarks/attention_scaling.py                 # prints a Markdown table
    .venv/bin/python benchmarks/attention_scaling.py --svg docs/attention_scaling.svg   # and a log-log plot
    .venv/bin/python benchmarks/attention_scaling.py --only "softmax,less" --tokens 64,256,1024 --threads 1
    .venv/bin/python benchmarks/attention_scaling.py --lavit --threads 1       # whole towers, with/without

The plot is written as plain SVG, so the benchmark needs nothing beyond torch and zir.

`--tome` measures token merging's speed/accuracy trade-off instead: it trains a small ViT (patch 2 on
32x32 `shapes` images, so 256 patch tokens, width 96, depth 4) to classify a single object by colour
(`--tome-label`; a from-scratch ViT this size needs far more CPU time to learn shapes), then, without
retraining, evaluates test accuracy and inference throughput while merging r tokens per
block (`zir.models.tome.set_token_merging`)::

    .venv/bin/python benchmarks/attention_scaling.py --tome --threads 1

`--tome-run RUN` measures a run fine-tuned through the `finetune` recipe instead (its tower and
`supervised` head, on the test split of its own data), so the trade-off can be read on a harder task::

    .venv/bin/python benchmarks/attention_scaling.py --tome --tome-run runs/finetune --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from zir.nn import Attention
from zir.nn.less_attention import LessAttention
from zir.nn.linear_attention import CascadedGroupAttention, SeparableSelfAttention
from zir.nn.window import WindowAttention, shifted_window_mask, window_and_shift, window_partition, window_reverse

TOKENS = (64, 256, 1024, 4096)


class ShiftedWindowLayer(nn.Module):
    """Swin's attention layer on (B, N, D) tokens of a square grid: roll, partition, masked window attention."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.window = (window, window)
        self.attn = WindowAttention(dim, num_heads, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); the shift is half a window, as in every second Swin block."""
        B, N, D = x.shape
        side = math.isqrt(N)
        grid = (side, side)
        window, shift = window_and_shift(grid, self.window, (self.window[0] // 2, self.window[1] // 2))
        y = x.view(B, side, side, D)
        if any(shift):
            y = torch.roll(y, (-shift[0], -shift[1]), dims=(1, 2))
        mask = shifted_window_mask(grid, window, shift, x.device)
        y = window_reverse(self.attn(window_partition(y, window), window, mask), window, grid)
        if any(shift):
            y = torch.roll(y, shift, dims=(1, 2))
        return y.reshape(B, N, D)


class ReusedScoresLayer(nn.Module):
    """A less-attention layer with the (B, H, N, N) scores an earlier block would hand it, as a parameter
    so that the backward pass also computes their gradient."""

    def __init__(self, dim: int, heads: int, tokens: int, transform: str) -> None:
        super().__init__()
        self.attn = LessAttention(dim, heads, transform=transform, num_tokens=tokens)
        self.scores = nn.Parameter(torch.randn(1, heads, tokens, tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        return self.attn.forward_scores(x, self.scores.expand(x.shape[0], -1, -1, -1))[0]


def make_layers(dim: int, heads: int, window: int, tokens: int = 64,
                token_maps_max: int = 1024) -> dict[str, Callable[[], nn.Module | None]]:
    """The mechanisms under test, by label; each builder returns a fresh layer for `tokens` tokens, or None
    where a mechanism is not measured at that size."""

    def softmax(impl: str) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            layer = Attention(dim, heads)
            layer.impl = impl
            return layer
        return build

    return {
        "global softmax, SDPA (ViT)": softmax("sdpa"),
        "global softmax, math (ViT)": softmax("math"),
        f"shifted window {window}x{window} (Swin)": lambda: ShiftedWindowLayer(dim, heads, window),
        "separable (MobileViT v2)": lambda: SeparableSelfAttention(dim),
        "cascaded group, key 16 (EfficientViT)": lambda: CascadedGroupAttention(dim, heads, key_dim=16),
        "less attention, head mixing (LaViT, zir)": lambda: ReusedScoresLayer(dim, heads, tokens, "heads"),
        "less attention, N x N token maps (LaViT)": (
            lambda: ReusedScoresLayer(dim, heads, tokens, "tokens") if tokens <= token_maps_max else None
        ),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TensorMemoryPeak(TorchDispatchMode):
    """Track the bytes of tensor storage created while active and still alive; `peak` is their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.sizes: dict[int, int] = {}

    def _freed(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self.sizes:  # a new storage, not a view of one already counted
                self.sizes[key] = storage.nbytes()
                self.live += self.sizes[key]
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._freed, key)
        return out


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory of one step above what was live before it (see the module docstring)."""
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorMemoryPeak() as tracker:
        step()
    return tracker.peak


def time_once(fn: Callable[[], None], device: torch.device, min_seconds: float) -> float:
    """Seconds per call of fn, averaged over as many calls as fill `min_seconds` (at least one)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        sync(device)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def fitted_exponent(tokens: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(tokens)."""
    xs, ys = [math.log(n) for n in tokens], [math.log(s) for s in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, dict[int, dict[str, float | None]]]:
    """{label: {tokens: {fwd_ms, fwdbwd_ms, peak_mb}}} for every mechanism and token count."""
    chosen = lambda label: not args.only or any(part in label for part in args.only.split(","))  # noqa: E731
    measured = [label for label in make_layers(args.dim, args.heads, args.window) if chosen(label)]
    results: dict[str, dict[int, dict[str, float | None]]] = {label: {} for label in measured}
    for tokens in args.tokens:
        torch.manual_seed(0)
        builders = make_layers(args.dim, args.heads, args.window, tokens, args.token_maps_max)
        layers = {label: builders[label]() for label in measured}
        for label in [label for label, layer in layers.items() if layer is None]:
            results[label][tokens] = {"fwd_ms": None, "fwdbwd_ms": None, "peak_mb": None}
            del layers[label]
        layers = {label: layer.to(device) for label, layer in layers.items()}
        x = torch.randn(args.batch, tokens, args.dim, device=device)
        xg = x.clone().requires_grad_(True)

        def forward(layer: nn.Module) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad():
                    layer(x)
            return run

        def train(layer: nn.Module) -> Callable[[], None]:
            def run() -> None:
                layer(xg).square().mean().backward()
                xg.grad = None
                layer.zero_grad(set_to_none=True)
            return run

        fwd: dict[str, list[float]] = {label: [] for label in layers}
        bwd: dict[str, list[float]] = {label: [] for label in layers}
        for layer in layers.values():  # warm-up: kernels, allocator, lazily built buffers
            forward(layer)()
            train(layer)()
        labels = list(layers)
        for rep in range(args.repeats):
            order = labels[rep % len(labels):] + labels[: rep % len(labels)]  # rotate who goes first
            for label in order:
                fwd[label].append(time_once(forward(layers[label]), device, args.min_seconds))
                bwd[label].append(time_once(train(layers[label]), device, args.min_seconds))
        for label, layer in layers.items():
            peak = peak_bytes(train(layer), device)
            results[label][tokens] = {
                "fwd_ms": 1e3 * statistics.median(fwd[label]),
                "fwdbwd_ms": 1e3 * statistics.median(bwd[label]),
                "peak_mb": peak / 2**20,
            }
            print(f"  {tokens:5d} tokens  {label:40s} fwd {results[label][tokens]['fwd_ms']:9.3f} ms  "
                  f"fwd+bwd {results[label][tokens]['fwdbwd_ms']:9.3f} ms", file=sys.stderr)
        del layers
    return results


def markdown(results: dict[str, dict[int, dict[str, float | None]]], tokens: list[int]) -> str:
    """The results as Markdown tables: times and peak memory per token count, and the fitted exponents."""
    fit = [n for n in tokens if n >= 256] if len([n for n in tokens if n >= 256]) >= 2 else tokens
    lines = []
    for key, title in (("fwd_ms", "forward, ms"), ("fwdbwd_ms", "forward+backward, ms"),
                       ("peak_mb", "peak memory of forward+backward, MiB")):
        lines.append(f"| {title} | " + " | ".join(f"{n} tokens" for n in tokens)
                     + (" | exponent |" if key != "peak_mb" else " |"))
        lines.append("|---|" + "---:|" * (len(tokens) + (key != "peak_mb")))
        for label, by_n in results.items():
            cells = []
            for n in tokens:
                value = by_n[n][key]
                cells.append("n/a" if value is None else (f"{value:.1f}" if key == "peak_mb" else f"{value:.3f}"))
            row = f"| {label} | " + " | ".join(cells) + " |"
            if key != "peak_mb":
                sizes = [n for n in fit if by_n[n][key] is not None]
                row += f" {fitted_exponent(sizes, [by_n[n][key] for n in sizes]):.2f} |" if len(sizes) >= 2 else " n/a |"
            lines.append(row)
        lines.append("")
    lines.append(f"Exponent: least-squares slope of log(time) on log(tokens) over {', '.join(map(str, fit))} tokens.")
    return "\n".join(lines)


def svg_plot(results: dict[str, dict[int, dict[str, float | None]]], tokens: list[int], key: str, title: str) -> str:
    """A log-log line plot of one measurement against the token count, as a standalone SVG document."""
    width, height, left, right, top, bottom = 720, 440, 70, 290, 40, 50
    values = [by_n[n][key] for by_n in results.values() for n in tokens if by_n[n][key]]
    lo_y, hi_y = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    lo_x, hi_x = math.log2(min(tokens)), math.log2(max(tokens))
    px = lambda n: left + (math.log2(n) - lo_x) / (hi_x - lo_x) * (width - left - right)  # noqa: E731
    py = lambda v: height - bottom - (math.log10(v) - lo_y) / (hi_y - lo_y) * (height - top - bottom)  # noqa: E731
    colors = ["#1f77b4", "#aec7e8", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{title}</text>']
    for decade in range(lo_y, hi_y + 1):
        y = py(10.0**decade)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{10.0**decade:g}</text>')
    for n in tokens:
        x = px(n)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 10}" text-anchor="middle">tokens (log scale)</text>')
    for i, (label, by_n) in enumerate(results.items()):
        color = colors[i % len(colors)]
        points = [(px(n), py(by_n[n][key])) for n in tokens if by_n[n][key]]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points)
        ly = top + 10 + 20 * i
        out.append(f'<line x1="{width - right + 15}" x2="{width - right + 35}" y1="{ly}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"/><text x="{width - right + 40}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


def train_shapes_vit(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Train the ToMe benchmark's ViT on shapes; returns it with the test images and labels."""
    from zir.data.builtin import ShapesSource
    from zir.models.vit import VisionTransformer

    def arrays(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = ShapesSource(split, n=n, size=32, objects=(1, 1), label=args.tome_label)
        images = torch.from_numpy(source.data.images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
        return images, torch.from_numpy(source.labels()).long()

    test_x, test_y = arrays("test", args.tome_test)
    torch.manual_seed(0)
    classes = {"colour": 6, "shape": 5, "size": 2}.get(args.tome_label, int(test_y.max()) + 1)
    model = VisionTransformer(img_size=32, patch_size=2, embed_dim=96, depth=4, num_heads=3, num_classes=classes)
    if args.tome_weights and os.path.exists(args.tome_weights):
        from zir.models.weights import load_weights

        load_weights(model, args.tome_weights)
        print(f"  loaded the trained ViT from {args.tome_weights}", file=sys.stderr)
        return model.eval(), test_x, test_y
    train_x, train_y = arrays("train", args.tome_train)
    steps = args.tome_epochs * (len(train_x) // args.batch_train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    model.train()
    start = time.perf_counter()
    for epoch in range(args.tome_epochs):
        order = torch.randperm(len(train_x))
        for i in range(0, len(order) - args.batch_train + 1, args.batch_train):
            idx = order[i:i + args.batch_train]
            x, y = train_x[idx], train_y[idx]
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"  epoch {epoch + 1}/{args.tome_epochs}: loss {loss.item():.3f}, "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.tome_weights:
        from zir.models.weights import save_weights

        save_weights(model, args.tome_weights)
    return model.eval(), test_x, test_y


class RunClassifier(nn.Module):
    """A fine-tuned zir run as one classifier: its image tower, pooled, through its `supervised` head."""

    def __init__(self, tower: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.tower, self.head = tower, head

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the tower's token features (B, T, D), merged when ToMe is on."""
        return self.tower.forward_tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> class logits (B, classes)."""
        return self.head(self.tower.pool(self.tower.forward_tokens(x)))


def load_run_classifier(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A run trained with the finetune recipe, with its held-out test images normalised as it trained."""
    from zir.data import make_loader
    from zir.eval.run_eval import _plan_stats, eval_data, image_size, image_tower, load_run, supervised_objective

    run = load_run(args.tome_run)
    name, tower = image_tower(run.model)
    obj = supervised_objective(run.model, name)
    if obj is None:
        raise SystemExit(f"{args.tome_run} has no supervised objective; fine-tune it with zir train finetune")
    mean, std = _plan_stats(run.model, run.config)
    data = eval_data(None, run.config, limit=args.tome_test)
    plan = {"global": 1, "pipeline": "none", "size": image_size(tower), "mean": mean, "std": std}
    batches = list(make_loader(data.test, plan, 250, shuffle=False, drop_last=False))
    test_x = torch.cat([b.views["global_0"] for b in batches])
    test_y = torch.cat([b.labels for b in batches])
    args.tome_desc = (f"{args.tome_run} ({type(tower).__name__}, {tower.patch_embed.num_patches} patch tokens, width "
                      f"{tower.embed_dim}, depth {len(tower.blocks)}, step {run.step}) on {data.name}:{data.test_split} "
                      f"({data.options})")
    print(f"  loaded {args.tome_run} at step {run.step}", file=sys.stderr)
    return RunClassifier(tower, obj.head).eval(), test_x, test_y


def tome_tradeoff(args: argparse.Namespace) -> str:
    """Accuracy, FLOPs and throughput of the trained ViT for each merge count; a Markdown table.

    Throughput is timed in rounds that alternate between the merge counts (rotating who goes first), and
    the median over rounds is reported, so load from other processes hits every setting alike.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from zir.models.tome import set_token_merging

    model, test_x, test_y = load_run_classifier(args) if args.tome_run else train_shapes_vit(args)
    vit = getattr(model, "tower", model)  # a run's classifier merges in its tower
    batch = test_x[: args.tome_batch]
    stats: dict[int, dict[str, float]] = {}
    for r in args.tome_r:
        set_token_merging(vit, r)
        with torch.no_grad():
            correct = sum(int((model(test_x[i:i + 250]).argmax(-1) == test_y[i:i + 250]).sum())
                          for i in range(0, len(test_x), 250))
            counter = FlopCounterMode(display=False)
            with counter:
                tokens = model.forward_tokens(test_x[:1]).shape[1]
            model(batch)  # warm-up
        stats[r] = {"tokens": tokens, "gflops": counter.get_total_flops() / 1e9,
                    "top1": 100.0 * correct / len(test_x), "times": []}
    for rep in range(args.repeats):
        order = args.tome_r[rep % len(args.tome_r):] + args.tome_r[: rep % len(args.tome_r)]
        for r in order:
            set_token_merging(vit, r)
            with torch.no_grad():
                stats[r]["times"].append(time_once(lambda: model(batch), torch.device("cpu"), args.min_seconds))
    set_token_merging(vit, 0)
    base = stats[args.tome_r[0]]
    base_speed = args.tome_batch / statistics.median(base["times"])
    rows = []
    for r in args.tome_r:
        st = stats[r]
        speed = args.tome_batch / statistics.median(st["times"])
        rows.append(f"| {r} | {st['tokens']} | {st['gflops']:.3f} | {speed:.0f} | {speed / base_speed:.2f}x | "
                    f"{st['top1']:.1f} | {st['top1'] - base['top1']:+.1f} |")
        print(f"  r={r}: {st['tokens']} tokens, {speed:.0f} img/s, top-1 {st['top1']:.1f}", file=sys.stderr)
    head = ("| r (tokens merged per block) | tokens after the last block | GFLOPs / image | images/s | speed-up | "
            "top-1 % | change |\n|---:|---:|---:|---:|---:|---:|---:|")
    return head + "\n" + "\n".join(rows)


def less_attention_models(args: argparse.Namespace) -> str:
    """Whole towers with and without less attention: parameters, FLOPs and step times; a Markdown table.

    The same ViT (`--lavit-model`, no head) at its native size, as published (softmax attention in every
    block, SDPA and math kernels) and with `less_attention=1` (block 1 attends, the rest reuse) for each
    transformation. Times are medians over rounds that alternate between the variants.
    """
    from torch.utils.flop_counter import FlopCounterMode

    import zir

    variants = {
        "softmax attention in every block, SDPA": ({}, "sdpa"),
        "softmax attention in every block, math": ({}, "math"),
        "less attention, head mixing (zir default)": ({"less_attention": 1}, "math"),
        "less attention, N x N token maps (paper)": ({"less_attention": 1, "less_attention_transform": "tokens"}, "math"),
    }
    models, stats = {}, {}
    for label, (kwargs, impl) in variants.items():
        torch.manual_seed(0)
        model = zir.create_model(args.lavit_model, num_classes=0, **kwargs)
        model.set_attention_impl(impl)
        side = model.patch_embed.img_size
        x = torch.randn(args.lavit_batch, 3, *side)
        model.eval().set_attention_impl("math")  # explicit matmuls, which the FLOP counter sees
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x[:1])
        model.set_attention_impl(impl)
        models[label] = (model, x)
        stats[label] = {"params": sum(p.numel() for p in model.parameters()), "gflops": counter.get_total_flops() / 1e9,
                        "fwd": [], "train": []}

    def forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model.eval()(x)
        return run

    def train(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            model.train()(x).square().mean().backward()
            model.zero_grad(set_to_none=True)
        return run

    for model, x in models.values():
        forward(model, x)()
        train(model, x)()
    labels = list(models)
    for rep in range(args.repeats):
        for label in labels[rep % len(labels):] + labels[: rep % len(labels)]:
            model, x = models[label]
            stats[label]["fwd"].append(time_once(forward(model, x), torch.device("cpu"), args.min_seconds))
            stats[label]["train"].append(time_once(train(model, x), torch.device("cpu"), args.min_seconds))
    base = statistics.median(stats[labels[0]]["train"])
    rows = ["| tower | params | GFLOPs / image | forward, ms | forward+backward, ms | vs SDPA |",
            "|---|---:|---:|---:|---:|---:|"]
    for label in labels:
        st = stats[label]
        fwd, step = 1e3 * statistics.median(st["fwd"]), 1e3 * statistics.median(st["train"])
        rows.append(f"| {label} | {st['params']:,} | {st['gflops']:.3f} | {fwd:.1f} | {step:.1f} | {step / 1e3 / base:.2f}x |")
        print(f"  {label}: fwd {fwd:.1f} ms, fwd+bwd {step:.1f} ms", file=sys.stderr)
    return "\n".join(rows)


def machine() -> str:
    """One line naming the machine, threads and torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            match = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated square token counts")
    parser.add_argument("--dim", type=int, default=128, help="token width D")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--window", type=int, default=8, help="Swin window side (must divide every grid side)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="alternated repetitions per cell (median reported)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="time per repetition")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a shared, loaded machine, 1 is steadiest)")
    parser.add_argument("--only", help="comma-separated parts of mechanism labels to measure (default: all)")
    parser.add_argument("--token-maps-max", type=int, default=1024,
                        help="largest token count at which LaViT's N x N token maps are measured")
    parser.add_argument("--lavit", action="store_true", help="compare whole towers with and without less attention")
    parser.add_argument("--lavit-model", default="vit_micro_patch4_32", help="zoo ViT for --lavit")
    parser.add_argument("--lavit-batch", type=int, default=32)
    parser.add_argument("--svg", help="also write a log-log plot of forward+backward time to this SVG file")
    parser.add_argument("--tome", action="store_true", help="measure token merging's speed/accuracy trade-off instead")
    parser.add_argument("--tome-r", default="0,4,8,16,24,32", help="merge counts per block to evaluate")
    parser.add_argument("--tome-label", default="colour", help="shapes task: colour, shape, size")
    parser.add_argument("--tome-train", type=int, default=4000, help="shapes training images")
    parser.add_argument("--tome-test", type=int, default=1000, help="shapes test images")
    parser.add_argument("--tome-epochs", type=int, default=3)
    parser.add_argument("--batch-train", type=int, default=64)
    parser.add_argument("--tome-batch", type=int, default=64, help="inference batch for the throughput")
    parser.add_argument("--tome-weights", help="safetensors file: load the trained ViT from it, or save it there")
    parser.add_argument("--tome-run", help="instead of training here, measure a run fine-tuned with zir train finetune "
                        "(its tower and supervised head, on its data's test split)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lavit:
        table = less_attention_models(args)
        print(f"{args.lavit_model} (no head) at its native size, batch {args.lavit_batch}, fp32, on {machine()}.\n")
        print(table)
        return
    if args.tome:
        args.tome_r = [int(r) for r in args.tome_r.split(",")]
        table = tome_tradeoff(args)
        if args.tome_run:
            print(f"{args.tome_desc}, {len(table.splitlines()) - 2} merge counts, {args.tome_test} test images at most; "
                  f"inference batch {args.tome_batch}, fp32, on {machine()}.\n")
        else:
            print(f"ViT (patch 2, width 96, depth 4, 256 patch tokens) on shapes (32x32, one object, by {args.tome_label}), "
                  f"{args.tome_train} training images x {args.tome_epochs} epochs, {args.tome_test} test images; "
                  f"inference batch {args.tome_batch}, fp32, on {machine()}.\n")
        print(table)
        return
    args.tokens = [int(t) for t in args.tokens.split(",")]
    for n in args.tokens:
        side = math.isqrt(n)
        if side * side != n or (side > args.window and side % args.window):
            parser.error(f"{n} tokens: need a square grid whose side the window {args.window} divides")
    device = torch.device(args.device)
    results = measure(args, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    print(f"Attention layers, D={args.dim}, {args.heads} heads, batch {args.batch}, fp32, on {where}.\n")
    print(markdown(results, args.tokens))
    if args.svg:
        with open(args.svg, "w") as handle:
            handle.write(svg_plot(results, args.tokens, "fwdbwd_ms",
                                  f"Attention forward+backward time (ms), D={args.dim}, batch {args.batch}"))
        print(f"\nwrote {args.svg}", file=sys.stderr)


if __name__ == "__main__":
    main()
