"""ViT training throughput: forward + backward + AdamW step, images/s and peak memory, zir vs timm.

For every (model, batch size, dtype) cell the script builds one zir model per attention implementation
(`sdpa`, `math`, `auto`) and, when timm is importable, timm's model of the same configuration twice
(timm's default, and timm with its fused attention switched off). After warm-up it times one round per
candidate, alternating between them (the order rotates every repetition so none always runs first or
last), and reports the median images/s over the repetitions. Alternating matters on a shared machine:
load from other processes then hits every candidate alike instead of whichever ran during the spike.
`--clock cpu` divides by this process's CPU time instead of wall time; with `--threads 1` that leaves out
the time the thread waited for a core that other processes held, which steadies figures on a busy machine
(the table then shows the wall-clock median beside it).

Peak memory is measured on the last (untimed) warm-up step of each candidate:
- CUDA: `torch.cuda.max_memory_allocated()` over the step (everything live, weights included).
- CPU: the bytes of parameters, AdamW state and the batch live before the step (counted from the tensors)
  plus the peak of bytes held by torch's CPU allocator during the step above what was live when it began,
  read from the allocation events `torch.profiler` records with `profile_memory=True`. Like the CUDA
  figure, this counts tensor memory allocated through torch, not the process's RSS (allocator caching,
  libraries, Python).

`--mode infer` times forward passes under `torch.no_grad()` in eval mode instead (no optimizer), which is
what `auto` decides for when `training` is False.

Run it where timm is importable, with zir on the path, e.g.::

    PYTHONPATH=src /work/timm-env/bin/python benchmarks/vit_throughput.py \
        --models vit_tiny_patch4_32 --dtypes fp32,bf16

Without timm, only the zir rows are printed. `--attention-only` times a single attention call of each
model's (B, H, N, d) shape through `zir.nn.attention.attend`, SDPA against explicit matmuls, with and
without backward: the evidence behind `choose_attention_impl`. `--profile` prints the top operators of one training step per
candidate (torch.profiler, self CPU/CUDA time) to see where the time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

import zir
from zir.nn.attention import choose_attention_impl

DEFAULT_BATCH = {"vit_tiny_patch4_32": [128], "vit_small_patch16_224": [16]}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Width, depth and heads of the named ViT sizes, to build timm's model for zoo names timm does not register.
VIT_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}


@dataclass
class Candidate:
    """One model under test: its label, module, optimizer and the images/s of each repetition."""

    family: str  # "zir" or "timm"
    variant: str  # zir: attention impl; timm: "default" or "unfused"
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rates: list[float] = field(default_factory=list)  # images/s by the chosen clock, one per repetition
    wall_rates: list[float] = field(default_factory=list)  # images/s by the wall clock
    peak_bytes: int | None = None

    @property
    def label(self) -> str:
        """Short name for tables."""
        return f"{self.family}:{self.variant}"


def try_import_timm():
    """timm if it can be imported here, else None (it is never a dependency of zir)."""
    try:
        import timm  # noqa: F401

        return timm
    except Exception:  # a broken torchvision also lands here; the benchmark then runs zir alone
        return None


def image_size(name: str, model: torch.nn.Module) -> tuple[int, int]:
    """The model's native (H, W): from the tower if it says, else from the name's trailing number."""
    for obj in (model, getattr(model, "patch_embed", None)):
        size = getattr(obj, "img_size", None)
        if size is not None:
            return (size, size) if isinstance(size, int) else tuple(size)
    match = re.search(r"_(\d+)$", name)
    if not match:
        raise SystemExit(f"cannot tell the image size of {name}")
    return int(match.group(1)), int(match.group(1))


def timm_model(timm, name: str, num_classes: int, img_size: tuple[int, int]) -> torch.nn.Module:
    """timm's model of the same configuration: its registry entry, else a VisionTransformer from the name."""
    if timm.is_model(name):
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    match = re.fullmatch(r"vit_(tiny|small|base|large)_patch(\d+)_(\d+)", name)
    if not match:
        raise SystemExit(f"no timm equivalent known for {name}; pass --no-timm")
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size, patch_size=int(match.group(2)), num_classes=num_classes, **VIT_SIZES[match.group(1)]
    )


def set_timm_fused_attn(model: torch.nn.Module, fused: bool) -> None:
    """Switch timm's fused attention (F.scaled_dot_product_attention) on or off in every attention module."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def n_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def make_step(
    cand: Candidate, x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: torch.dtype, mode: str
) -> Callable[[], None]:
    """A closure running one forward + backward + AdamW step (or one forward) of the candidate."""
    autocast = dtype != torch.float32

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
            cand.model(x)

    def step() -> None:
        cand.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            out = cand.model(x)
        # Distilled models return (cls logits, distillation logits) in training mode.
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = sum(F.cross_entropy(o.float(), y) for o in outs)
        loss.backward()
        cand.optimizer.step()

    return step if mode == "train" else infer


def sync(device: torch.device) -> None:
    """Wait for queued device work so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def static_bytes(cand: Candidate, *tensors: torch.Tensor) -> int:
    """Bytes of parameters, optimizer state and the given tensors."""
    total = sum(p.numel() * p.element_size() for p in cand.model.parameters())
    for state in cand.optimizer.state.values():
        total += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    return total + sum(t.numel() * t.element_size() for t in tensors)


def cpu_step_peak_bytes(step: Callable[[], None]) -> int:
    """Peak bytes held by torch's CPU allocator during one step, above what was live when it started."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
    current = peak = 0
    for _, size in sorted(allocations):
        current += size  # frees are negative; frees of blocks allocated before the step push below 0
        peak = max(peak, current)
    return peak


def step_with_peak(cand: Candidate, step: Callable[[], None], device: torch.device, x, y) -> int | None:
    """Run one step and return its peak memory in bytes (see the module docstring), or None."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device)
    before = static_bytes(cand, x, y)  # counted first: the first step creates the AdamW state inside it
    try:
        return before + cpu_step_peak_bytes(step)
    except Exception as err:  # private profiler API: report n/a rather than a wrong figure
        print(f"  (peak memory unavailable for {cand.label}: {err})", file=sys.stderr)
        step()
        return None


def profile_step(cand: Candidate, step: Callable[[], None], device: torch.device, top: int) -> None:
    """Print the operators that take the most self time in one step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n--- profile {cand.label} ---")
    print(prof.key_averages().table(sort_by=key, row_limit=top))


def build_candidates(args, timm, name: str, device: torch.device) -> tuple[list[Candidate], tuple[int, int], int]:
    """The zir model once per attention impl and timm's model (default and unfused), all seeded alike."""
    cands = []
    train = args.mode == "train"
    for impl in args.impls:
        torch.manual_seed(0)
        model = zir.create_model(name).to(device).train(train)
        model.set_attention_impl(impl)
        cands.append(Candidate("zir", impl, model, torch.optim.AdamW(model.parameters(), lr=1e-4)))
    ref = cands[0].model
    size = image_size(name, ref)
    with torch.no_grad():
        num_classes = ref.eval()(torch.zeros(1, 3, *size, device=device))
        num_classes = (num_classes[0] if isinstance(num_classes, (tuple, list)) else num_classes).shape[-1]
    ref.train(train)
    if timm is not None:
        for variant in args.timm_variants:
            torch.manual_seed(0)
            model = timm_model(timm, name, num_classes, size).to(device).train(train)
            if variant == "unfused":
                set_timm_fused_attn(model, fused=False)
            cands.append(Candidate("timm", variant, model, torch.optim.AdamW(model.parameters(), lr=1e-4)))
    return cands, size, num_classes


def run_cell(args, timm, name: str, batch: int, dtype_name: str, device: torch.device) -> list[dict]:
    """Measure every candidate for one (model, batch, dtype) cell, alternating; one result row each."""
    dtype = DTYPES[dtype_name]
    cands, size, num_classes = build_candidates(args, timm, name, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    steps = [make_step(c, x, y, device, dtype, args.mode) for c in cands]

    for cand, step in zip(cands, steps):
        for _ in range(args.warmup - 1):
            step()
        cand.peak_bytes = step_with_peak(cand, step, device, x, y)
        sync(device)
    timed_from = time.perf_counter()
    for rep in range(args.reps):
        if rep > 0 and args.cell_budget and time.perf_counter() - timed_from > args.cell_budget:
            print(f"#   cell budget of {args.cell_budget} s spent: {rep} of {args.reps} repetitions", flush=True)
            break
        order = list(range(len(cands)))
        shift = rep % len(order)
        for i in order[shift:] + order[:shift]:
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steps[i]()
            sync(device)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            cands[i].wall_rates.append(batch * args.steps / wall)
            cands[i].rates.append(batch * args.steps / (cpu if args.clock == "cpu" else wall))
        print(f"#   {name} b{batch} {dtype_name} rep {rep + 1}: "
              + ", ".join(f"{c.label} {c.rates[-1]:.2f}" for c in cands), flush=True)
    if args.profile:
        for cand, step in zip(cands, steps):
            profile_step(cand, step, device, args.profile_top)

    compute_dtype = torch.float32 if dtype_name == "fp32" else dtype
    auto_choice = choose_attention_impl(device.type, compute_dtype, args.mode == "train")
    timm_rate = {c.variant: statistics.median(c.rates) for c in cands if c.family == "timm"}
    rows = []
    for cand in cands:
        rate = statistics.median(cand.rates)
        impl = cand.variant
        if cand.family == "zir" and impl == "auto":
            impl = f"auto->{auto_choice}"
        elif cand.family == "timm":
            impl = {"default": "timm default", "unfused": "fused_attn=False"}[cand.variant]
        rows.append(
            dict(
                model=name, batch=batch, dtype=dtype_name, impl=f"{cand.family}:{impl}", params=n_params(cand.model),
                rate=rate, spread=(min(cand.rates), max(cand.rates)), peak=cand.peak_bytes,
                wall_rate=statistics.median(cand.wall_rates),
                vs_default=rate / timm_rate["default"] if "default" in timm_rate else None,
                vs_unfused=rate / timm_rate["unfused"] if "unfused" in timm_rate else None,
            )
        )
    del cands, steps
    return rows


def attention_only(args, name: str, batch: int, dtype_name: str, device: torch.device) -> None:
    """Time one attention call of the model's shape, SDPA against explicit matmuls, forward(+backward)."""
    from zir.nn.attention import attend

    model = zir.create_model(name)
    size = image_size(name, model)
    tokens = model.num_prefix_tokens + (size[0] // model.patch_size[0]) * (size[1] // model.patch_size[1])
    heads = model.num_heads
    shape = (batch, heads, tokens, model.embed_dim // heads)
    dtype = DTYPES[dtype_name]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for train in (True, False):
        g = torch.Generator().manual_seed(0)
        q, k, v, grad = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_(train) for _ in range(4))

        def call(impl: str) -> None:
            with torch.set_grad_enabled(train):
                out, _ = attend(q, k, v, impl=impl)
                if train:
                    out.backward(grad.detach())
            sync(device)

        times = {"sdpa": [], "math": []}
        for impl in times:
            call(impl)  # warm-up
        for rep in range(max(args.reps, 5)):
            for impl in (("sdpa", "math") if rep % 2 else ("math", "sdpa")):
                start = clock()
                call(impl)
                times[impl].append(clock() - start)
        sdpa, math = (statistics.median(times[i]) * 1e3 for i in ("sdpa", "math"))
        print(f"| {name} | (B, H, N, d) = {shape} | {dtype_name} | {'fwd+bwd' if train else 'fwd, no grad'} "
              f"| {sdpa:.1f} | {math:.1f} | {sdpa / math:.2f} |", flush=True)


def print_table(rows: list[dict], clock: str) -> None:
    """Markdown table of all rows (paste-able into docs/benchmarks.md); ratios use the chosen clock."""
    cols = ["model", "batch", "dtype", "implementation", "params",
            "img/s (median)" if clock == "wall" else "img per CPU-s (median)", "min-max"]
    cols += ["img/s wall (median)"] if clock == "cpu" else []
    cols += ["peak MB", "/ timm default", "/ timm unfused"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" if c in ("model", "dtype", "implementation") else "---:" for c in cols) + "|")
    num = lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}"  # noqa: E731  three figures for slow models
    for r in rows:
        cells = [r["model"], r["batch"], r["dtype"], r["impl"], f"{r['params']:,}", num(r["rate"]),
                 f"{num(r['spread'][0])}-{num(r['spread'][1])}"]
        cells += [num(r["wall_rate"])] if clock == "cpu" else []
        cells += ["n/a" if r["peak"] is None else f"{r['peak'] / 2**20:.0f}"]
        cells += ["" if r[k] is None else f"{r[k]:.2f}" for k in ("vs_default", "vs_unfused")]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def parse_batches(specs: list[str] | None, models: list[str]) -> dict[str, list[int]]:
    """Batch sizes per model from `--batch-sizes 32,64` (all models) or `name=32,64` items."""
    out = {m: DEFAULT_BATCH.get(m, [32]) for m in models}
    for spec in specs or []:
        if "=" in spec:
            name, sizes = spec.split("=", 1)
            out[name] = [int(s) for s in sizes.split(",")]
        else:
            out = {m: [int(s) for s in spec.split(",")] for m in models}
    return out


def cpu_has_native_bf16() -> bool | None:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 / AMX), None if torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return None


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every cell, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit_tiny_patch4_32,vit_small_patch16_224", help="comma-separated zoo names")
    p.add_argument("--batch-sizes", nargs="*", help="'32,64' for every model, or 'NAME=32,64' per model")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32 (no autocast), bf16, fp16 (autocast)")
    p.add_argument("--impls", default="sdpa,math,auto", help="zir attention implementations to measure")
    p.add_argument("--timm-variants", default="default,unfused", help="timm variants: default, unfused")
    p.add_argument("--no-timm", action="store_true", help="measure zir only even if timm is importable")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mode", choices=("train", "infer"), default="train", help="training steps or forward passes")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per candidate (>= 1; the last measures memory)")
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions; the median is reported")
    p.add_argument("--steps", type=int, default=1, help="timed steps per candidate per repetition")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="rate by wall time, or by this process's CPU time (steadier on a shared machine; "
                        "meaningful with --threads 1, where it excludes time the thread waited for a core)")
    p.add_argument("--cell-budget", type=float, default=None,
                   help="seconds of timed repetitions per cell after which no new repetition starts")
    p.add_argument("--attention-only", action="store_true",
                   help="time only one attention call of each model's shape: SDPA against explicit matmuls")
    p.add_argument("--profile", action="store_true", help="print the top operators of one step per candidate")
    p.add_argument("--profile-top", type=int, default=15)
    args = p.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    args.impls = [s for s in args.impls.split(",") if s]
    args.timm_variants = [s for s in args.timm_variants.split(",") if s]
    models = [s for s in args.models.split(",") if s]
    dtypes = [s for s in args.dtypes.split(",") if s]
    for d in dtypes:
        if d not in DTYPES:
            raise SystemExit(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timm = None if args.no_timm else try_import_timm()

    print(f"# command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# device: {device} ({cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch threads {torch.get_num_threads()}, os.cpu_count {os.cpu_count()}")
    print(f"# torch {torch.__version__}, zir {zir.__version__}, timm {timm.__version__ if timm else 'not importable'}")
    if device.type == "cpu":
        print(f"# CPU capability {torch.backends.cpu.get_cpu_capability()}, "
              f"oneDNN bf16 {cpu_has_native_bf16()} (without it bf16 matmuls take a slow path)")
    print(f"# mode {args.mode}, warmup {args.warmup}, reps {args.reps} x {args.steps} step(s), alternating; "
          f"median rate by the {args.clock} clock")
    if hasattr(os, "getloadavg"):
        print("# load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    for d in dtypes:
        compute = torch.float32 if d == "fp32" else DTYPES[d]
        print(f"# auto attention for {device.type} {d} training: {choose_attention_impl(device.type, compute, True)}, "
              f"inference: {choose_attention_impl(device.type, compute, False)}")

    rows = []
    batches = parse_batches(args.batch_sizes, models)
    started = time.perf_counter()
    if args.attention_only:
        print("| model | attention shape | dtype | pass | SDPA ms | math ms | SDPA / math |")
        print("|---|---|---|---|---:|---:|---:|")
        for name in models:
            for batch in batches[name]:
                for d in dtypes:
                    attention_only(args, name, batch, d, device)
        return
    for name in models:
        for batch in batches[name]:
            for d in dtypes:
                cell = run_cell(args, timm, name, batch, d, device)
                rows.extend(cell)
                for r in cell:
                    print(f"#   {r['model']} b{r['batch']} {r['dtype']} {r['impl']}: {r['rate']:.2f} img/s "
                          f"({args.clock} clock)", flush=True)
    print()
    print_table(rows, args.clock)
    if hasattr(os, "getloadavg"):
        print("\n# load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"# wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
