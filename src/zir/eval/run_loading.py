"""Loading a run for evaluation: `load_run()` of `src/zir/run_loading.py` (config, newest checkpoint or export
-> model, tokenizer, data settings) with eval's checks, and the towers and heads eval reads from the model.

Nothing named in a run folder is imported: the model is built by `zir.models.factories.build_recipe_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

import zir.objectives  # noqa: F401  (registers every objective, so any run's recipe builds)
from zir.errors import ZirError
from zir.run_loading import LoadedRun, RunError, read_run_config, run_tokenizer  # noqa: F401  (eval's names)
from zir import run_loading


class EvalError(ZirError, ValueError):
    """A folder that is not an evaluable run, or a task list zir does not know."""


def load_run(run_dir: str | os.PathLike, ema: bool = False) -> LoadedRun:
    """The run's ZirModel at its newest checkpoint (or its export when it has no checkpoints), in eval mode:
    `zir.run_loading.load_run()` for a run folder (config.yaml required), its errors as EvalError lines."""
    run_dir = Path(run_dir)
    try:
        if not run_dir.is_dir():
            raise EvalError(f"{run_dir} is not a run folder (it does not exist)")
        read_run_config(run_dir)  # eval needs the run's config (data settings), not only an export's model
        run = run_loading.load_run(run_dir, ema=ema)
    except RunError as err:
        raise EvalError(str(err)) from None
    if not hasattr(run.model, "towers"):
        raise EvalError(f"{run_dir}: the model is not a ZirModel with towers; evaluate its tower with zir.eval directly")
    return run


def random_init_model(config: dict) -> nn.Module:
    """The run's architecture at its initial weights (seeded by train.seed, as the trainer seeds them)."""
    from zir.models.factories import build_recipe_model

    seed = int((config.get("train") or {}).get("seed", 0) or 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_recipe_model(config["model"])
    return model.eval()


def image_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the model's image tower: `image`, else the first tower whose modality is image."""
    towers = model.towers
    if "image" in towers:
        return "image", towers["image"]
    for name, tower in towers.items():
        if tower.modality == "image":
            return name, tower
    raise EvalError(f"the model has no image tower (towers: {', '.join(towers)})")


def scored_tower(model: nn.Module, modality: str | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the tower `zir eval` scores: the image tower (`image_tower`), else the audio tower
    (`audio`, else the first whose modality is audio); for data of `modality` "audio" (recordings without
    images), the audio tower first."""
    towers = model.towers
    has_audio = any(t.modality == "audio" for t in towers.values())
    if any(t.modality == "image" for t in towers.values()) and not (modality == "audio" and has_audio):
        return image_tower(model)
    audio = sorted((name for name, t in towers.items() if t.modality == "audio"), key=lambda n: n != "audio")
    if audio:
        return audio[0], towers[audio[0]]
    raise EvalError(f"the model has no image or audio tower to score (towers: {', '.join(towers)})")


def teacher_tower(model: nn.Module, tower_name: str = "image") -> tuple[str, nn.Module]:
    """(name, module) of the EMA teacher of `tower_name` (DINO, iBOT), or an EvalError when the run has none."""
    teachers = getattr(model, "teachers", None) or {}
    name = f"{tower_name}_teacher"
    if name not in teachers:
        raise EvalError(f"--teacher: the run has no EMA teacher of its {tower_name} tower "
                        f"(dino and ibot keep one; this run's teachers: {', '.join(teachers) or 'none'})")
    return name, teachers[name].module


def supervised_objective(model: nn.Module, tower_name: str = "image"):
    """The model's first `supervised` objective (classifier head) on `tower_name`, or None."""
    from zir.objectives.supervised import Supervised

    for obj in model.objectives.values():
        if isinstance(obj, Supervised) and obj.tower_name == tower_name:
            return obj
    return None


def image_size(tower: nn.Module) -> int:
    """The side of the square images the tower was built for (its native `img_size`)."""
    return int(tower.img_size[0])


def image_text_objective(model: nn.Module, tower_name: str = "image"):
    """The model's first image-text objective (CLIP, SigLIP, CoCa, the CLIP part of SLIP) on `tower_name`, else
    an ImageBind objective's joint space of that tower and its text tower (emergent for a bound tower), or None."""
    from zir.objectives.clip import ImageText
    from zir.objectives.imagebind import ImageBind

    for obj in model.objectives.values():
        for module in obj.modules():
            if isinstance(module, ImageText) and module.tower_name == tower_name:
                return module
    for obj in model.objectives.values():
        if isinstance(obj, ImageBind) and obj.joint_space(tower_name) is not None:
            return obj.joint_space(tower_name)
    return None
