"""Loading a run for evaluation: config, newest checkpoint (or export) -> model, its towers, its tokenizer.

Nothing named in a run folder is imported: the model is built by `zir.models.factories.build_recipe_model`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

import zir.objectives  # noqa: F401  (registers every objective, so any run's recipe builds)
from zir.errors import ConfigError, ZirError

class EvalError(ZirError, ValueError):
    """A folder that is not an evaluable run, or a task list zir does not know."""


@dataclass
class LoadedRun:
    """A run's model at its newest weights with where they came from."""

    run_dir: Path
    config: dict
    model: nn.Module
    step: int
    source: str  # the checkpoint folder or export file the weights came from
    ema: bool = False
    extra: dict = field(default_factory=dict)


# -- the run ----------------------------------------------------------------------------------------

def _read_config(run_dir: Path) -> dict:
    """The run's config.yaml as a dict."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise EvalError(f"{run_dir} is not a run folder (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EvalError(f"{path} is not UTF-8 text, so not valid YAML") from None
    except yaml.YAMLError as err:
        raise EvalError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise EvalError(f"{path} has no model section")
    return raw


def _check_model(model: nn.Module, run_dir: Path) -> nn.Module:
    if not hasattr(model, "towers"):
        raise EvalError(f"{run_dir}: the model is not a ZirModel with towers; evaluate its tower with zir.eval directly")
    return model


def load_run(run_dir: str | os.PathLike, ema: bool = False) -> LoadedRun:
    """The run's ZirModel at its newest checkpoint (or its export when it has no checkpoints), in eval mode."""
    from zir.models.factories import build_recipe_model
    from zir.train.checkpoint import latest_checkpoint, list_checkpoints

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir} is not a run folder (it does not exist)")
    cfg = _read_config(run_dir)
    if list_checkpoints(run_dir / "checkpoints"):
        path, (model_state, state, ema_state) = latest_checkpoint(run_dir / "checkpoints")
        if ema:
            if ema_state is None:
                raise EvalError(f"{run_dir} keeps no weight EMA (train.ema was off)")
            model_state = {**model_state, **ema_state}
        model = _check_model(build_recipe_model(cfg["model"], origin=str(run_dir / "config.yaml")), run_dir)
        _load_weights(model, model_state, path)
        return LoadedRun(run_dir, cfg, model.eval(), int(state["step"]), str(path), ema)
    for export in (run_dir / "model.safetensors", run_dir / "export" / "model.safetensors"):
        if export.is_file():
            from safetensors import safe_open

            from zir.train.runs import load

            model = _check_model(load(export), run_dir)
            with safe_open(str(export), framework="pt") as fh:
                meta = fh.metadata() or {}
            step = meta.get("step", "0") or "0"
            if not step.isdigit():
                raise EvalError(f"{export}: its step metadata {step!r} is not a whole number")
            step = int(step)
            return LoadedRun(run_dir, cfg, model.eval(), step, str(export), meta.get("ema") == "True")
    raise EvalError(f"{run_dir} has no checkpoint nor export to evaluate (train it first)")


def _load_weights(model: nn.Module, state: dict, path: Path) -> None:
    """Load a checkpoint's weights; a run whose config.yaml no longer fits them is one EvalError line."""
    from zir.train.runs import first_mismatch

    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise EvalError(f"{path} does not fit the run's config.yaml: {first_mismatch(err)}") from None


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


def run_tokenizer(run_dir: str | os.PathLike, config: dict, model: nn.Module):
    """The run's text tokenizer: RUN/tokenizer.json, else data.tokenizer (a path, also relative to the run, or a
    shipped name such as shapes), else the model's own; None if none."""
    from zir.data import load_tokenizer
    from zir.data.tokenizer import text_context
    from zir.recipes import tokenizer_path

    run_dir = Path(run_dir)
    candidates = [run_dir / "tokenizer.json", run_dir / "export" / "tokenizer.json"]
    named = (config.get("data") or {}).get("tokenizer")
    if named:
        try:
            candidates.append(tokenizer_path(named, base=run_dir))
        except ConfigError:
            pass  # gone since the run trained: the model's own tokenizer, if any, below
    for path in candidates:
        if path.is_file() or (path.is_dir() and (path / "tokenizer.json").is_file()):
            return load_tokenizer(path, context_length=text_context(model))
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return tok
    from zir.data.tokenizer import tower_tokenizer

    return tower_tokenizer(model)
