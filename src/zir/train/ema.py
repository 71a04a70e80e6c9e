"""An exponential moving average of a model's weights (evaluation and export may use it)."""

from __future__ import annotations

import torch
from torch import nn

from zir.nn.ema import ema_update_


class WeightEMA:
    """Shadow copies (float32) of the floating-point parameters and buffers, updated as ema = d * ema + (1 - d) * w
    by `ema_update_()`, the step the EMA teachers take too."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards the model's current weights."""
        state = model.state_dict()
        ema_update_(list(self.shadow.values()), [state[k] for k in self.shadow], self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by name."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged tensors saved by state_dict."""
        for k in self.shadow:
            if k in state:
                self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        """Write the averages into `model` (for evaluation or export)."""
        state = model.state_dict()
        with torch.no_grad():
            for k, v in self.shadow.items():
                state[k].copy_(v.to(state[k].dtype))
