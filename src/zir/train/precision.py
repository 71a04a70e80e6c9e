"""`train.precision: auto`: bf16 autocast where the processor computes in bf16 natively, fp32 elsewhere.

On a CPU with AVX512-BF16 or AMX a small ViT's training step runs about 1.5x as fast under bf16 autocast
(docs/benchmarks.md); on one without, bf16 is emulated and slower than fp32. The choice is made once, when a run
starts, and recorded in its checkpoints and status.json, so a run resumed on another machine keeps its precision.
"""

from __future__ import annotations

import torch

CONCRETE = ("fp32", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix products in hardware (CUDA with bf16, a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch 2.x: absent means no
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(requested: str, device: torch.device, recorded: str | None = None) -> str:
    """The precision a run trains in: `requested` unless it is `auto`; for `auto`, the one the run `recorded`
    when it started (a resume), else bf16 where `device` has it natively and fp32 elsewhere."""
    if requested != "auto":
        return requested
    if recorded in CONCRETE:
        return recorded
    return "bf16" if native_bf16(device) else "fp32"
