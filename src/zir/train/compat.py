"""Reading what earlier zir versions wrote.

CLIP's temperature and SigLIP's temperature and bias were 0-d parameters until FSDP support made them
shape (1,) (`fully_shard` refuses 0-d parameters). Their modules reshape old weights on load (see
zir.losses.clip.accept_0d_checkpoints); the optimizer's moments for them are reshaped here, so that an old
run resumes.
"""

from __future__ import annotations

import torch


def fit_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give 0-d per-parameter state tensors (Adam's moments) the shape of their 1-element parameter."""
    for param, state in optimizer.state.items():
        if param.ndim != 1 or param.numel() != 1:
            continue
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor) and value.ndim == 0:
                state[key] = value.reshape(param.shape)
