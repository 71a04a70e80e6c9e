"""The encode-once model: towers + weighted objectives + the plan of forwards per step.

`ZirModel(towers, objectives)` collects every objective's views and forwards into one plan. A step runs
each distinct (tower, view, masked) forward once, hands the cache of token features to every objective,
and sums the weighted losses. The training engine calls exactly:

    model = build_model(cfg["model"]); plan = model.view_plan()
    out = model(batch); out.loss.backward(); model.after_step(step, total_steps)
    optimizer = AdamW(model.param_groups(weight_decay, layer_decay, base_lr))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from zir.data.audio_views import AUDIO_PIPELINE_ORDER
from zir.data.plan import Batch, ViewPlan
from zir.data.transforms import local_size_for
from zir.errors import ConfigError, ShapeError, ZirError
from zir.objectives import Forward, Objective, TeacherSpec, create_objective
from zir.objectives.base import first_rows
from zir.objectives.phase import Phase, pop_phase

# strongest augmentation first: a shared view is augmented for the objective that needs the most
PIPELINE_ORDER = ("dino", "simclr", "byol", "mae", "light", "none")
_VIEWS_OF = {"image": "image towers read global_<i>, local_<i> or image views", "text": "text towers read text_<i> views",
             "audio": "audio towers read audio_<i> views"}


@dataclass
class ModelOutput:
    """A step's result: the weighted total `loss`, each objective's unweighted `<name>_loss`, float metrics."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class ZirModel(nn.Module):
    """Towers plus weighted objectives; runs each planned forward once per step and sums the objectives' losses.

    `plan_forwards` lists the distinct (tower, view, masked) forwards; `plan_calls` lists the tower calls of
    one step: one per forward, or, with `stack_views`, one per group of same-size views stacked along the
    batch (as DINO's multi-crop does; same features per sample, fewer and larger matrix products).
    """

    def __init__(self, towers: dict[str, nn.Module], objectives: dict[str, tuple[Objective, float]],
                 stack_views: bool = False, phases: dict[str, Phase] | None = None) -> None:
        """`towers` by name (e.g. `image`); `objectives` by name -> (objective, weight); `stack_views`: one call
        per view size; `phases`: when objectives start or ramp in (all count from the first step by default)."""
        super().__init__()
        self.stack_views = bool(stack_views)
        if not towers:
            raise ConfigError("model: no towers; expected at least an `image` tower")
        if not objectives:
            raise ConfigError("model: no objectives; expected at least one")
        self.towers = nn.ModuleDict(towers)
        self.objectives = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, entry in objectives.items():
            if not isinstance(entry, (tuple, list)) or len(entry) != 2 or not isinstance(entry[0], Objective):
                raise ConfigError(f"model: objective {name!r} must be given as (Objective, weight)")
            obj, weight = entry
            self.objectives[name] = obj
            self.weights[name] = float(weight)
        self.teachers, self.teacher_specs = self._build_teachers()
        self.plan_forwards = self._plan_forwards()
        self.plan_calls = self._plan_calls(self.plan_forwards) if self.stack_views else [(f,) for f in self.plan_forwards]
        self._register_load_state_dict_pre_hook(self._move_old_mask_tokens)
        self.phases = {name: (phases or {}).get(name, Phase()) for name in self.objectives}
        self.phased = not all(p.always for p in self.phases.values())
        if self.phased and not any(p.always for p in self.phases.values()):
            raise ConfigError("model.objectives: every objective starts late or ramps in; expected at least one "
                              "that counts from the first step (no start or ramp)")
        if self.phased:  # a buffer, so a resumed run continues exactly
            self.register_buffer("phase_factors", torch.tensor([p.factor(0, 1) for p in self.phases.values()]))

    def _build_teachers(self) -> tuple[nn.ModuleDict, dict[str, TeacherSpec]]:
        """One `EMATeacher` per teacher name the objectives declare, handed to each objective that reads it.

        Objectives naming one teacher share it (DINO and iBOT: `image_teacher`), so it must be one EMA: a second
        declaration with another student tower or momentum schedule fails in one line naming both objectives.
        """
        teachers, specs, owners = nn.ModuleDict(), {}, {}
        for oname, obj in self.objectives.items():
            for tname, spec in obj.teacher_specs().items():
                if tname in self.towers:
                    raise ConfigError(f"model: teacher {tname!r} has the name of a tower")
                if spec.tower not in self.towers:
                    raise ConfigError(f"model.objectives.{oname}: teacher {tname} follows tower {spec.tower!r}, "
                                      "which the model does not have")
                first = specs.setdefault(tname, spec)
                if spec.tower != first.tower:
                    raise ConfigError(f"model.objectives: {owners[tname]} and {oname} share the teacher {tname} but follow "
                                      f"towers {first.tower} and {spec.tower}")
                if spec.schedule() != first.schedule():  # one EMA: one momentum schedule
                    raise ConfigError(
                        f"model.objectives: {owners[tname]} and {oname} share the teacher {tname} but ask for "
                        f"momentum {first.schedule()} and {spec.schedule()} (start, end); give both "
                        "the same momentum and final_momentum")
                if tname not in teachers:
                    teachers[tname], owners[tname] = spec.build(self.towers[spec.tower]), oname
                obj.use_teacher(tname, teachers[tname])
        return teachers, specs

    def _move_old_mask_tokens(self, state: dict, prefix: str, *_) -> None:
        """Load checkpoints written before towers owned their mask token: iBOT and SimMIM kept it as
        `objectives.<name>.mask_token`; it becomes `towers.<tower>.mask_token` (and the EMA teacher's copy)."""
        for oname, obj in self.objectives.items():
            old = f"{prefix}objectives.{oname}.mask_token"
            if old not in state or not obj.needs_mask_token:
                continue
            token = state.pop(old)
            state.setdefault(f"{prefix}towers.{obj.tower_name}.mask_token", token)
            teacher = f"{prefix}teachers.{obj.tower_name}_teacher.module.mask_token"
            if f"{obj.tower_name}_teacher" in self.teachers:
                state.setdefault(teacher, token.clone())

    # -- the plan -------------------------------------------------------------------------------------
    def _plan_forwards(self) -> list[Forward]:
        """Distinct forwards of all objectives, students before teachers, in first-declared order."""
        seen: dict[Forward, None] = {}
        for name, obj in self.objectives.items():
            for f in obj.possible_forwards():
                if f.tower not in self.towers and f.tower not in self.teachers:
                    raise ConfigError(f"objective {name}: forward on unknown tower {f.tower!r}")
                if f.fill and f.fill not in {o.name for o in self.objectives.values()}:
                    raise ConfigError(f"objective {name}: masked patches filled by {f.fill!r}, which is not in the model")
                modality = self.tower_for(f.tower).modality
                if modality != f.view.modality:
                    raise ConfigError(f"objective {name}: reads the {f.view.modality} view {f.view} with the {modality} "
                                      f"tower {f.tower!r}; {_VIEWS_OF[modality]}")
                seen.setdefault(f, None)
        return list(seen)

    @staticmethod
    def _plan_calls(forwards: list[Forward]) -> list[tuple[Forward, ...]]:
        """Group forwards into tower calls: same tower, mask, fill, rows and view size class (global/image, local, text)."""
        calls: dict[tuple, list[Forward]] = {}
        for f in forwards:
            calls.setdefault((f.tower, f.mask, f.fill, f.rows, f.view.size_class), []).append(f)
        return [tuple(fs) for fs in calls.values()]

    def view_plan(self) -> ViewPlan:
        """The union of the objectives' views and named masks as one ViewPlan (sizes from the image tower).

        Built once: each objective's needs become a ViewPlan, `ViewPlan.union` merges them (two objectives
        asking for one mask name on one view with different settings fail here, naming both), the strongest
        augmentation any objective asks for wins, and the image tower sets the sides.
        """
        sides: dict = {}
        tower = self.towers["image"] if "image" in self.towers else None
        if tower is not None and tower.modality == "image":
            patch, size = tower.patch_size[0], tower.img_size[0]
            if size % patch:  # a convolutional tower (MobileViT: one token per 32 px) takes smaller images too
                patch = math.gcd(size, patch)
            sides = {"size": size, "patch_size": patch, "local_size": fitting_local_size(tower, size, patch)}
        audio = self.audio_tower()
        if audio is not None:  # its front end and patch: what the data computes for it, and its mask grid
            sides.update(spectrogram=dict(audio.spectrogram), audio_patch_size=tuple(audio.patch_size))
        merged: ViewPlan | None = None
        pipes, audio_pipes, owners = [], [], {}
        for name, obj in self.objectives.items():
            needs = dict(obj.view_plan())
            pipes.append(needs.pop("pipeline", "simclr"))
            audio_pipes.append(needs.pop("audio_pipeline", "crop"))
            try:
                plan = ViewPlan.from_dict({**needs, **sides})
            except ConfigError as err:
                raise ConfigError(f"model.objectives.{name}: {err}") from None
            for view, spec in plan.mask_specs():
                first, asked = owners.setdefault((view, spec.name), (name, spec))
                if asked != spec:
                    raise ConfigError(
                        f"model.objectives: {first} and {name} both name mask {spec.name!r} on view {view} but ask for "
                        f"{asked.describe()} and {spec.describe()}; give one of them its own mask_name")
            merged = plan if merged is None else merged.union(plan)
        merged.pipeline = min(pipes, key=lambda x: PIPELINE_ORDER.index(x) if x in PIPELINE_ORDER else len(PIPELINE_ORDER))
        merged.audio_pipeline = min(audio_pipes, key=lambda x: AUDIO_PIPELINE_ORDER.index(x)
                                    if x in AUDIO_PIPELINE_ORDER else len(AUDIO_PIPELINE_ORDER))
        return merged

    def audio_tower(self) -> nn.Module | None:
        """The audio tower the plan's audio views are computed for: the one named `audio`, else the first."""
        audio = [t for name, t in sorted(self.towers.items(), key=lambda kv: kv[0] != "audio") if t.modality == "audio"]
        return audio[0] if audio else None

    def check_plan(self, plan: ViewPlan, where: str = "data.plan") -> None:
        """Raise a ConfigError naming the plan field whose crops the image tower cannot take (Swin's windows), or
        whose spectrogram the audio tower cannot."""
        audio = self.audio_tower()
        if audio is not None and plan.audio:
            try:
                audio.check_size(plan.spectrogram.n_mels, plan.spectrogram.frames)
            except ShapeError as err:
                raise ConfigError(f"{where}.spectrogram: {err}") from None
        tower = self.towers["image"] if "image" in self.towers else None
        if tower is None or tower.modality != "image":
            return
        sides = (("size", plan.size, plan.global_views + plan.image), ("local_size", plan.local_size, plan.local_views))
        for name, side, used in sides:
            if not used:
                continue
            try:
                tower.check_size(side, side)
            except ShapeError as err:
                hint = nearest_fitting_side(tower, side, plan.size if name == "local_size" else 2 * side)
                suggestion = f"; e.g. {where}.{name}={hint}" if hint else ""
                raise ConfigError(f"{where}.{name}={side}: {err}{suggestion}") from None

    # -- a step ---------------------------------------------------------------------------------------
    def tower_for(self, name: str) -> nn.Module:
        """The module a forward's tower name refers to: a tower, or a teacher's frozen copy."""
        return self.towers[name] if name in self.towers else self.teachers[name].module

    def active_weights(self) -> dict[str, float]:
        """Each objective's weight at this step: its recipe weight times its phase factor (0: not computed)."""
        if not self.phased:
            return dict(self.weights)
        return {name: self.weights[name] * float(f) for name, f in zip(self.objectives, self.phase_factors)}

    def encode(self, batch: Batch, needed: set[Forward] | None = None) -> dict[Forward, torch.Tensor]:
        """Run every planned forward once: the feature cache, each entry (B, P + K, D).

        With `stack_views`, forwards that differ only in their view (the global crops, the local crops)
        run as one tower call on the views stacked along the batch.
        """
        cache: dict[Forward, torch.Tensor] = {}
        for call in self.plan_calls:
            call = tuple(f for f in call if needed is None or f in needed)
            if not call:
                continue
            inputs = [self._inputs(batch, f) for f in call]
            # views of one call share a shape by construction of the plan; split if an override broke that
            by_shape: dict[tuple, list[int]] = {}
            for i, (x, m) in enumerate(inputs):
                key = (tuple(x.shape[1:]), None if m is None else tuple(m.shape[1:]))
                by_shape.setdefault(key, []).append(i)
            for idx in by_shape.values():
                fs = [call[i] for i in idx]
                xs = torch.cat([inputs[i][0] for i in idx]) if len(idx) > 1 else inputs[idx[0]][0]
                ms = None
                if inputs[idx[0]][1] is not None:
                    ms = torch.cat([inputs[i][1] for i in idx]) if len(idx) > 1 else inputs[idx[0]][1]
                out = self._run(fs[0], xs, ms)
                for f, part in zip(fs, out.split([inputs[i][0].shape[0] for i in idx])):
                    cache[f] = part
        return cache

    def _inputs(self, batch: Batch, f: Forward) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input of a forward and its keep (B, K) or fill mask (B, N), or None when unmasked; only the
        forward's leading rows when it reads part of the batch."""
        name = f.view.name
        # text: token ids (B, L); images (B, 3, H, W) and spectrograms (B, 1, n_mels, frames)
        x = batch.tokens.get(name) if f.view.modality == "text" else batch.views.get(name)
        if x is None:
            raise ConfigError(f"batch has no view {name!r}; build the loader from model.view_plan()")
        rows = first_rows(f.rows, x.shape[0])
        x = x[:rows]
        if not f.masked:
            return x, None
        mask = batch.mask(name, f.mask)
        return x, (mask.mask if f.fill else mask.keep)[:rows].to(x.device)

    def _run(self, f: Forward, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """One tower call for forward `f` (teachers without gradients)."""
        tower = self.tower_for(f.tower)
        teacher = f.tower in self.teachers
        with torch.set_grad_enabled(torch.is_grad_enabled() and not teacher):
            if m is None:
                return tower.forward_tokens(x)
            if f.fill:
                return tower.forward_tokens(x, mask=m)
            return tower.forward_tokens(x, m)

    def forward(self, batch: Batch) -> ModelOutput:
        """One step's loss: encode once, then every objective reads the cache (objectives not started: neither)."""
        weights = self.active_weights()
        active = {name: obj for name, obj in self.objectives.items() if weights[name] != 0.0 or self.weights[name] == 0.0}
        cache = self.encode(batch, {f for obj in active.values() for f in obj.forwards()})
        total = None
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for name, obj in active.items():
            out = obj(batch, cache)
            weighted = weights[name] * out.value
            total = weighted if total is None else total + weighted
            terms[f"{name}_loss"] = out.value.detach()
            metrics[f"{name}_loss"] = float(out.value.detach())
            for k, v in out.metrics.items():
                metrics[f"{name}_{k}"] = float(v)
            if not self.phases[name].always:
                metrics[f"{name}_weight"] = weights[name]
        metrics["loss"] = float(total.detach())
        return ModelOutput(total, terms, metrics)

    def after_step(self, step: int, total_steps: int) -> None:
        """Each teacher's EMA step (once, however many objectives read it), the objectives' per-step hooks (their
        heads' EMA, temperature schedules) and the next step's phases."""
        for name, teacher in self.teachers.items():
            teacher.update(self.towers[self.teacher_specs[name].tower], step, total_steps)
        for obj in self.objectives.values():
            obj.after_step(step, total_steps)
        if self.phased:
            self.phase_factors.copy_(torch.tensor([p.factor(step + 1, total_steps) for p in self.phases.values()]))

    # -- optimisation ---------------------------------------------------------------------------------
    def param_groups(self, weight_decay: float, layer_decay: float | None = None, base_lr: float | None = None) -> list[dict]:
        """AdamW parameter groups: no decay for biases, norms, tokens and position tables; layer-wise lr scales.

        With `layer_decay` d, a tower parameter at depth i (its `layer_index`, 0 = embeddings) of a tower
        with deepest index L gets lr scale d ** (L - i); heads of objectives get scale 1. Each group carries
        `lr_scale` and, when `base_lr` is given, `lr = base_lr * lr_scale`. Frozen parameters are left out.
        """
        groups: dict[tuple[bool, float], dict] = {}

        def add(param, decay: bool, scale: float, label: str) -> None:
            key = (decay, scale)
            if key not in groups:
                g = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale, "names": []}
                if base_lr is not None:
                    g["lr"] = base_lr * scale
                groups[key] = g
            groups[key]["params"].append(param)
            groups[key]["names"].append(label)

        seen: set[int] = set()
        for tname, tower in self.towers.items():
            skip = tower.no_weight_decay()
            named = [(n, p) for n, p in tower.named_parameters() if p.requires_grad]
            depth = None
            if layer_decay is not None:
                depth = max((tower.layer_index(n) for n, _ in named), default=0)
            for n, p in named:
                if id(p) in seen:  # a module shared by towers (model.share_transformer): one entry, the first tower's
                    continue
                seen.add(id(p))
                scale = layer_decay ** (depth - tower.layer_index(n)) if depth is not None else 1.0
                add(p, p.ndim > 1 and n not in skip, scale, f"towers.{tname}.{n}")
        for oname, obj in self.objectives.items():
            skip = obj.no_weight_decay()
            for n, p in obj.named_parameters():
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                add(p, p.ndim > 1 and n not in skip, 1.0, f"objectives.{oname}.{n}")
        return list(groups.values())


def fitting_local_size(tower: nn.Module, size: int, patch: int) -> int | None:
    """DINO's local crop side (96/224 of `size`, a multiple of the patch), or the nearest side the tower takes.

    Swin needs sides whose patch grid halves at every merge and whose stage grids the window divides, so the
    default rounding to the patch size is not always enough (14 px at 32 px would break Swin).
    """
    target = local_size_for(size, patch)
    try:
        tower.check_size(target, target)
        return target
    except ShapeError:
        return nearest_fitting_side(tower, target, size)


def nearest_fitting_side(tower: nn.Module, target: float, limit: int) -> int | None:
    """The image side nearest `target` (at most `limit`, a multiple of the output stride) the tower takes, or None."""
    unit = tower.feature_stride[0]
    for side in sorted(range(unit, max(limit, unit) + 1, unit), key=lambda s: (abs(s - target), -s)):
        try:
            tower.check_size(side, side)
            return side
        except ShapeError:
            continue
    return None


def build_model(spec: dict) -> ZirModel:
    """A model from a recipe's model section: {towers: {name: {model: ..., **overrides}}, objectives: {name: {weight, ...}}}.

    An objective's registered name is its key, or its `type` field when given (two SimCLR heads on
    different views, say). Towers default to `num_classes: 0` (no classifier head). `stack_views: true`
    runs same-size views (the global crops, the local crops) as one stacked tower call each. `adapt` adds LoRA
    to the towers and freezes their parameters (`zir.models.adapt`). `share_transformer: [image, audio]` gives the
    listed towers one transformer (VATT; `zir.models.shared_backbone`).
    """
    from zir.models import create_model
    from zir.models.adapt import adapt_towers
    from zir.models.tower import check_tower

    if not isinstance(spec, dict):
        raise ConfigError(f"model: expected a mapping with towers and objectives; got {type(spec).__name__}")
    unknown = set(spec) - {"towers", "objectives", "stack_views", "adapt", "share_transformer"}
    if unknown:
        raise ConfigError(f"model: unknown field {sorted(unknown)[0]!r}; expected towers, objectives, stack_views, "
                          "adapt, share_transformer")
    stack_views = spec.get("stack_views", False)
    if not isinstance(stack_views, bool):
        raise ConfigError(f"model.stack_views: expected true or false; got {stack_views!r}")
    tower_specs = spec.get("towers") or {}
    if not isinstance(tower_specs, dict) or not tower_specs:
        raise ConfigError("model.towers: expected a mapping such as {image: {model: vit_micro_patch4_32}}")
    obj_specs = spec.get("objectives") or {}
    if not isinstance(obj_specs, dict) or not obj_specs:
        raise ConfigError("model.objectives: expected a mapping such as {mae: {weight: 1.0}}")
    masked = towers_needing_mask_tokens(obj_specs)
    towers = {}
    for name, tspec in tower_specs.items():
        tspec = {"model": tspec} if isinstance(tspec, str) else dict(tspec or {})
        if "model" not in tspec:
            raise ConfigError(f"model.towers.{name}: missing field 'model' (a zoo name such as vit_micro_patch4_32)")
        model_name = tspec.pop("model")
        tspec.setdefault("num_classes", 0)
        if name in masked and "mask_token" not in tspec and "mask_token" in model_options(model_name):
            tspec["mask_token"] = True  # iBOT / SimMIM fill masked patches with the tower's own token
        try:
            towers[name] = create_model(model_name, **tspec)
        except (TypeError, ValueError) as e:  # a value of the wrong type reached the constructor: name the tower
            raise _named(e, f"model.towers.{name}", tspec) from None
        check_tower(towers[name], f"model.towers.{name}")
    adapt_towers(towers, spec.get("adapt"))  # LoRA and frozen parameters, before teachers copy a tower
    if spec.get("share_transformer") is not None:  # VATT's modality-agnostic backbone: one set of block weights
        from zir.models.shared_backbone import share_transformer

        share_transformer(towers, spec["share_transformer"])
    objectives, phases = {}, {}
    for name, ospec in obj_specs.items():
        ospec = dict(ospec or {})
        weight = ospec.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"model.objectives.{name}.weight: expected a number; got {weight!r}")
        kind = ospec.pop("type", name)
        phases[name] = pop_phase(ospec, f"model.objectives.{name}")
        try:
            objectives[name] = (create_objective(kind, towers, **ospec), float(weight))
        except ConfigError as e:
            raise ConfigError(f"model.objectives.{name}: {e}") from None
        except (TypeError, ValueError) as e:
            raise _named(e, f"model.objectives.{name}", ospec) from None
    return ZirModel(towers, objectives, stack_views=stack_views, phases=phases)


def _named(err: Exception, where: str, values: dict) -> Exception:
    """A constructor's TypeError or ValueError as a one-line ConfigError naming the section and its values."""
    if isinstance(err, ZirError):
        return err
    text = str(err).splitlines()[0] if str(err) else ""
    given = ", ".join(f"{k}={v!r}" for k, v in values.items() if k != "num_classes")
    return ConfigError(f"{where}: does not build from {given or 'its defaults'} ({type(err).__name__}: {text})")


def towers_needing_mask_tokens(obj_specs: dict) -> set[str]:
    """Names of the towers an objective with `needs_mask_token` (iBOT, SimMIM) reads: they get one at build."""
    from zir.objectives.base import OBJECTIVES

    names = set()
    for name, ospec in obj_specs.items():
        ospec = ospec if isinstance(ospec, dict) else {}
        kind, tower = ospec.get("type", name), ospec.get("tower", "image")
        cls = OBJECTIVES.get(kind) if isinstance(kind, str) else None  # malformed values are reported later
        if cls is not None and cls.needs_mask_token and isinstance(tower, str):
            names.add(tower)
    return names


def model_options(name: str) -> set[str]:
    """The constructor options of a zoo model (empty for an unknown name: `create_model` reports it)."""
    import inspect

    from zir.models import get_model_spec
    from zir.errors import UnknownNameError

    if not isinstance(name, str):
        return set()
    try:
        return set(inspect.signature(get_model_spec(name).cls.__init__).parameters)
    except UnknownNameError:
        return set()
