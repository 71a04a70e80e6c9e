"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update, y = W x + b + s * B A x.

`LoRALinear` keeps the wrapped layer's `weight` and `bias` under their own names and adds `lora_a` (r, in),
`lora_b` (out, r) and the scale s = alpha / r as a buffer, so a tower's state dict keeps every key it had
(a pretrained checkpoint still loads into it) and a checkpoint carries what merging needs. `lora_b` starts
at zero: the adapted layer computes exactly what the original did until training moves it.

`merge_lora_state` folds the update into the weights of a state dict (W <- W + s * B A) and drops the LoRA
keys; the result loads into the same architecture built without LoRA (what `zir export` writes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LORA_SUFFIXES = ("lora_a", "lora_b", "lora_scale")


class LoRALinear(nn.Linear):
    """A linear layer with a rank-r update; its `weight` and `bias` are the wrapped layer's own tensors."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.register_buffer("lora_scale", torch.tensor(float(alpha) / rank, device=device))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def rank(self) -> int:
        """r, the rank of the update."""
        return self.lora_a.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): the frozen layer plus the scaled low-rank path."""
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)
        return F.linear(x, self.weight, self.bias) + self.lora_scale.to(update.dtype) * update

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this layer computes (dropout aside)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.lora_scale * (self.lora_b @ self.lora_a))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={float(self.lora_scale):g}"


def is_lora_key(key: str) -> bool:
    """Whether a state-dict key belongs to a LoRA update (not to the base weights)."""
    return key.rsplit(".", 1)[-1] in LORA_SUFFIXES


def has_lora(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict holds LoRA updates."""
    return any(is_lora_key(k) for k in state)


def merge_lora_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of `state` with every LoRA update folded into its layer's weight and the LoRA keys dropped."""
    out = {k: v for k, v in state.items() if not is_lora_key(k)}
    for key in state:
        if key.rsplit(".", 1)[-1] != "lora_a":
            continue
        prefix = key[: -len("lora_a")]
        a, b = state[key].float(), state[prefix + "lora_b"].float()
        scale = state[prefix + "lora_scale"].float()
        weight = state[prefix + "weight"]
        out[prefix + "weight"] = (weight.float() + scale * (b @ a)).to(weight.dtype)
    return out


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every LoRALinear inside `module` by its merged nn.Linear, in place; returns `module`."""
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        else:
            merge_lora(child)
    return module
