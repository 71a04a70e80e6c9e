"""The objective interface: what an objective needs (views, forwards), what it returns (a `Loss`), its registry.

An objective never runs a tower itself. It declares the `Forward`s it needs, the model runs each distinct
(tower, view, mask) forward once per step, and `forward(batch, features)` reads the cached token features
`features[Forward(...)]`, each (B, P + K, D) with the tower's prefix tokens first.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from zir.data.views import DEFAULT_MASK, MaskSpec, View, view_counts  # noqa: F401
from zir.errors import ConfigError, UnknownNameError
from zir.losses.distributed import all_mean, gather_with_grad  # noqa: F401  (for objectives)


@dataclass
class Loss:
    """An objective's result: a scalar `value` to minimise and named float `metrics` for logging."""

    value: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Forward:
    """One tower forward an objective needs: `tower` run on `view`, with the view's mask `mask` applied (none: "").

    Objectives that name the same mask of the same view share one masked forward. `fill` names the objective
    whose masked patches become the tower's mask token (iBOT, SimMIM: `forward_tokens(x, mask=m)`) instead of
    being dropped (MAE: `forward_tokens(x, keep)`); empty: dropped. `view` may be given as its name.
    """

    tower: str
    view: View
    mask: str = ""
    fill: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", View.parse(self.view))
        if not isinstance(self.mask, str):
            raise ConfigError(f"forward on {self.view}: mask={self.mask!r}: expected a mask name or ''")

    @property
    def masked(self) -> bool:
        """Whether the forward reads a mask of its view."""
        return bool(self.mask)


def views_needed(views) -> dict:
    """The `ViewPlan.from_dict` counts that make the named views exist: ['global_1', 'local_0'] -> {global: 2, local: 1}."""
    return view_counts(views)


def mask_plan(view, spec: MaskSpec) -> dict:
    """The `ViewPlan.from_dict` entry asking for mask `spec` on `view`: {masks: {view: (spec,)}}."""
    return {"masks": {View.parse(view).name: (spec,)}}


class Objective(nn.Module):
    """Base of all objectives: heads as submodules, `view_plan`, `forwards`, `forward(batch, features) -> Loss`."""

    name = "objective"
    # True for objectives whose masked forwards fill patches with the tower's mask token (iBOT, SimMIM):
    # `build_model` then builds the tower with `mask_token: true` unless the recipe sets it.
    needs_mask_token = False

    def __init__(self, towers: dict[str, nn.Module], tower: str = "image") -> None:
        """Keep a reference to the towers (not registered: the model owns them) and the tower this reads."""
        super().__init__()
        if tower not in towers:
            raise ConfigError(f"objective {self.name}: tower {tower!r} not among the model's towers ({', '.join(towers) or 'none'})")
        self.towers = dict(towers)  # a plain dict, so the towers' parameters are not registered twice
        self.tower_name = tower

    @property
    def tower(self) -> nn.Module:
        """The tower this objective trains."""
        return self.towers[self.tower_name]

    def view_plan(self) -> dict:
        """The views and masks this objective needs, in `ViewPlan.from_dict` form."""
        raise NotImplementedError

    def forwards(self) -> list[Forward]:
        """The (tower, view, mask) forwards whose features `forward` reads."""
        raise NotImplementedError

    def forward(self, batch, features: dict[Forward, torch.Tensor]) -> Loss:
        """The loss from a batch and the cached token features (B, P + K, D) of each declared forward."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA teachers, schedules); `step` counts from 0."""

    def no_weight_decay(self) -> set[str]:
        """Names of this objective's parameters that weight decay should skip (beyond biases and norms)."""
        return set()

    def teachers(self) -> dict[str, "EMATeacher"]:
        """Teacher towers this objective owns, by the tower name its forwards use (e.g. `image_teacher`)."""
        return {}

    def use_teacher(self, name: str, teacher: "EMATeacher") -> None:
        """Read the teacher `name` from `teacher`, owned elsewhere (the model, or another objective sharing it)."""
        attr = self._teacher_attrs()[name]
        self._modules.pop(attr, None)
        object.__setattr__(self, attr, teacher)  # unregistered: the model's state dict holds it once

    def _teacher_attrs(self) -> dict[str, str]:
        """Map teacher tower name -> attribute holding its EMATeacher."""
        return {}


class EMATeacher(nn.Module):
    """A frozen copy of a student tower that follows it by an exponential moving average.

    The momentum follows DINO's cosine schedule from `momentum` at step 0 to `final_momentum` at the last
    step: m(k) = final - (final - momentum) * (cos(pi k / K) + 1) / 2. Updating twice at the same step is a
    no-op, so objectives that share one teacher (DINO and iBOT) may each call `update`.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.996, final_momentum: float = 1.0) -> None:
        """Copy `student` and freeze the copy."""
        super().__init__()
        if not 0.0 <= momentum <= final_momentum <= 1.0:
            raise ConfigError(f"teacher momentum {momentum} -> {final_momentum}: expected 0 <= momentum <= final_momentum <= 1")
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()
        self.momentum, self.final_momentum = float(momentum), float(final_momentum)
        self.last_step: int | None = None

    def train(self, mode: bool = True) -> "EMATeacher":
        """The teacher always runs in eval mode (no dropout or drop path)."""
        super().train(mode)
        self.module.eval()
        return self

    def schedule(self) -> tuple[float, float]:
        """(momentum at the first step, momentum at the last): what two objectives sharing this teacher must agree on."""
        return self.momentum, self.final_momentum

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA momentum after optimiser step `step` of `total_steps`."""
        frac = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
        return self.final_momentum - (self.final_momentum - self.momentum) * (math.cos(math.pi * frac) + 1) / 2

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, total_steps: int) -> float:
        """teacher <- m * teacher + (1 - m) * student for parameters; buffers are copied. Returns m."""
        m = self.momentum_at(step, total_steps)
        if self.last_step == step:
            return m
        self.last_step = step
        t_params = [p for _, p in sorted(self.module.named_parameters())]
        s_params = [p for _, p in sorted(student.named_parameters())]
        if len(t_params) != len(s_params):
            raise ConfigError("teacher and student towers have different parameters")
        torch._foreach_mul_(t_params, m)
        torch._foreach_add_(t_params, [p.detach().to(t.dtype) for p, t in zip(s_params, t_params)], alpha=1.0 - m)
        for (_, tb), (_, sb) in zip(sorted(self.module.named_buffers()), sorted(student.named_buffers())):
            tb.copy_(sb)
        return m


def ema_update_(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """In place: teacher parameters <- m * teacher + (1 - m) * student (heads beside a shared EMA tower)."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(m).add_(s.detach().to(t.dtype), alpha=1.0 - m)


def distributed() -> bool:
    """Whether torch.distributed is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 without torch.distributed."""
    return dist.get_rank() if distributed() else 0


# -- registry ------------------------------------------------------------------------------------------
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str, cls: type[Objective]) -> None:
    """Make an objective class available to `create_objective` and recipes under `name`."""
    if name in OBJECTIVES and OBJECTIVES[name] is not cls:
        raise ValueError(f"objective {name!r} is already registered")
    OBJECTIVES[name] = cls


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(OBJECTIVES)


def create_objective(name: str, towers: dict[str, nn.Module], **cfg) -> Objective:
    """An objective by registered name over `towers`, with keyword settings checked against its signature."""
    if name not in OBJECTIVES:
        raise UnknownNameError(f"objective {name!r}: expected one of {', '.join(list_objectives())}")
    cls = OBJECTIVES[name]
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p, v in params.items() if p not in ("self", "towers") and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    open_ended = any(v.kind == v.VAR_KEYWORD for v in params.values())
    unknown = [] if open_ended else [k for k in cfg if k not in allowed]
    if unknown:
        raise ConfigError(f"objective {name}: unknown setting {unknown[0]!r}; expected one of {', '.join(allowed)}")
    return cls(towers, **cfg)
