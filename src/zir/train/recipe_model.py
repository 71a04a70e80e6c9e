"""A recipe's model, the view plan its loader follows (the model's own, with `data.plan` overrides) and the
tokenizer its captions go through."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from zir.config import Config
from zir.data import ViewPlan
from zir.errors import ConfigError, ZirError


def build_model(section: dict) -> nn.Module:
    """The model of a recipe's model section; `factory: NAME` names a registered model factory (never an import)."""
    from zir.models.factories import build_recipe_model

    try:
        return build_recipe_model(section)
    except (TypeError, ValueError) as err:  # a value of the wrong type reached a constructor
        if isinstance(err, ZirError):
            raise
        factory = section.get("factory") if isinstance(section, dict) else None
        where = f"model.factory={factory!r}" if factory else "model"
        raise ConfigError(f"{where}: the model does not build from these values ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None


def view_plan_for(model: nn.Module, cfg: Config) -> ViewPlan:
    """The model's view plan with the recipe's data.plan overrides and the run's seed."""
    plan = model.view_plan()
    plan = plan if isinstance(plan, ViewPlan) else ViewPlan.from_dict(plan)
    spec = {f.name: getattr(plan, f.name) for f in fields(plan) if not f.name.startswith("_")}
    spec["seed"] = cfg.train.seed
    over = dict(cfg.data.plan)
    if isinstance(over.get("spectrogram"), dict):  # a few front-end settings over the audio tower's own
        over["spectrogram"] = {**plan.spectrogram.to_dict(), **over["spectrogram"]}
    if "size" in over and "local_size" not in over:
        spec["local_size"] = None
    spec.update(over)
    try:
        plan = ViewPlan.from_dict(spec)
    except ConfigError as err:
        raise ConfigError(f"data.plan: {err}") from None
    if hasattr(model, "check_plan"):
        model.check_plan(plan)  # crops a windowed tower (Swin) cannot take fail here, naming the field
    return plan


def tokenizer_for(model: nn.Module, cfg: Config) -> tuple[Any, Path | None]:
    """(caption tokenizer, its file): the recipe's `data.tokenizer` (a path or a shipped name such as shapes),
    else the model's own, else a pretrained text tower's (LiT), else None; the file only for data.tokenizer."""
    if cfg.data.tokenizer:
        from zir.data import load_tokenizer
        from zir.data.tokenizer import text_context
        from zir.recipes import tokenizer_path

        file = tokenizer_path(cfg.data.tokenizer)
        return load_tokenizer(file, context_length=text_context(model)), file
    if getattr(model, "tokenizer", None) is not None:
        return model.tokenizer, None
    from zir.data.tokenizer import tower_tokenizer

    return tower_tokenizer(model), None
