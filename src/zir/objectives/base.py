"""The objective interface: what an objective needs (views, forwards), what it returns (a `Loss`), its registry.

An objective never runs a tower itself. It declares the `Forward`s it needs, the model runs each distinct
(tower, view, mask) forward once per step, and `forward(batch, features)` reads the cached token features
`features[Forward(...)]`, each (B, P + K, D) with the tower's prefix tokens first.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from zir.data.views import DEFAULT_MASK, MaskSpec, View, view_counts  # noqa: F401
from zir.errors import ConfigError, UnknownNameError
from zir.losses.distributed import all_mean, gather_with_grad  # noqa: F401  (for objectives)
from zir.objectives.teacher import EMATeacher, TeacherSpec


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
    `rows` < 1 encodes only the first `first_rows(rows, B)` rows of the batch (a term computed on part of it,
    such as a teacher's targets for `masked_dino`'s `distill_fraction`); its features have that many rows.
    """

    tower: str
    view: View
    mask: str = ""
    fill: str = ""
    rows: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", View.parse(self.view))
        if not isinstance(self.mask, str):
            raise ConfigError(f"forward on {self.view}: mask={self.mask!r}: expected a mask name or ''")
        object.__setattr__(self, "rows", batch_fraction(self.rows, f"forward on {self.view}: rows"))

    @property
    def masked(self) -> bool:
        """Whether the forward reads a mask of its view."""
        return bool(self.mask)


def batch_fraction(value, where: str) -> float:
    """A share of the batch, 0 < value <= 1, as a float; anything else is a ConfigError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{where}={value!r}: expected a share of the batch, 0 < share <= 1")
    return float(value)


def first_rows(fraction: float, batch_size: int) -> int:
    """How many leading rows of a batch a term on `fraction` of it reads: ceil(fraction x B), at least 1. The
    loader shuffles, so the leading rows are a fresh random subset each step, and slicing them copies nothing."""
    return max(1, math.ceil(fraction * batch_size - 1e-9))


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
        self._teachers: dict[str, EMATeacher] = {}  # by name: handed over by the model, or built standalone
        self._own_teachers: set[str] = set()  # names of those built here (no model), so updated here

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

    def possible_forwards(self) -> list[Forward]:
        """Every forward `forwards()` may return during training (what the model plans); by default those."""
        return self.forwards()

    def forward(self, batch, features: dict[Forward, torch.Tensor]) -> Loss:
        """The loss from a batch and the cached token features (B, P + K, D) of each declared forward."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (heads' EMA, schedules); `step` counts from 0. Moves only the
        teachers this objective built itself: the model moves its own before calling this."""
        self.update_own_teachers(step, total_steps)

    def no_weight_decay(self) -> set[str]:
        """Names of this objective's parameters that weight decay should skip (beyond biases and norms)."""
        return set()

    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """The EMA teachers this objective reads, by the tower name its forwards use (e.g. `image_teacher`).

        Declared, not built: `ZirModel` builds one `EMATeacher` per name (objectives naming one share it),
        hands it over with `use_teacher()` and updates it once per step.
        """
        return {}

    def use_teacher(self, name: str, teacher: EMATeacher) -> None:
        """Read the declared teacher `name` from `teacher`, owned and updated by the model."""
        if name not in self.teacher_specs():
            raise ConfigError(f"objective {self.name}: declares no teacher {name!r}")
        self._teachers[name] = teacher  # a plain dict: the model's state dict holds the teacher once
        self._own_teachers.discard(name)

    def teacher_for(self, name: str) -> EMATeacher:
        """The teacher `name`: the model's, or, standalone (no model handed one over), a copy of the student
        tower built here on first use, which this objective then updates itself (`after_step()`)."""
        if name not in self._teachers:
            spec = self.teacher_specs()[name]
            self._teachers[name] = spec.build(self.towers[spec.tower])
            self._own_teachers.add(name)
        return self._teachers[name]

    def update_own_teachers(self, step: int, total_steps: int) -> None:
        """The EMA step of the teachers this objective built itself; those the model owns, the model moves."""
        specs = self.teacher_specs()
        for name in sorted(self._own_teachers):
            self._teachers[name].update(self.towers[specs[name].tower], step, total_steps)


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
