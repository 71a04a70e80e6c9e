"""Loading a run: a run folder, one checkpoint folder or a `zir export` file -> its config, model, tokenizer,
data settings, the weights it read and their step.

The one place that decides which weights a path stands for (`run_weights()`) and builds the model around them
(`load_run()`): `zir eval`, `zir report`, `zir explain`, `zir export`, `model.init` and `zir.load()` all go
through it. It sits below `train` and `eval`, reading checkpoints through `src/zir/checkpoint.py`. Nothing
named in a file is imported: the model is built by `build_recipe_model()` from registered names only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from zir.checkpoint import MODEL_FILE, STATE_FILE, latest_checkpoint, list_checkpoints, load_checkpoint
from zir.errors import ConfigError, WeightsError


KINDS = ("any", "checkpoint", "export")  # which weights a path may stand for (`run_weights()`)


class RunError(WeightsError):
    """A path that is not a loadable zir run, checkpoint or export, or whose weights do not fit its config."""


@dataclass
class RunWeights:
    """The weights a path stands for, read, with where they came from."""

    state: dict[str, torch.Tensor]  # the model's state dict (with the weight EMA folded in when asked for)
    source: Path  # the checkpoint folder or export file read
    step: int
    ema: bool
    run_dir: Path  # the run folder (for an export: the folder named, or the file's folder)
    metadata: dict[str, str] = field(default_factory=dict)  # an export's safetensors metadata; {} for a checkpoint

    @property
    def is_export(self) -> bool:
        return self.source.is_file()


@dataclass
class LoadedRun:
    """A run's model at the weights `source` holds, in eval mode, with its config and where it came from."""

    run_dir: Path
    config: dict
    model: nn.Module
    step: int
    source: str  # the checkpoint folder or export file the weights came from
    ema: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def data(self) -> dict:
        """The run's data settings (its config's `data` section; {} for a bare export)."""
        section = self.config.get("data")
        return section if isinstance(section, dict) else {}

    @cached_property
    def tokenizer(self):
        """The run's caption tokenizer (`run_tokenizer()`), read on first use; None if it has none."""
        return run_tokenizer(self.run_dir, self.config, self.model)


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """A run's config.yaml as a dict; a missing, unreadable or model-less file is one RunError line."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunError(f"{path} is not UTF-8 text, so not valid YAML") from None
    except yaml.YAMLError as err:
        raise RunError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise RunError(f"{path} has no model section")
    return raw


def run_weights(path: str | os.PathLike, ema: bool = False, kind: str = "any") -> RunWeights:
    """The weights `path` stands for: a run folder's newest readable checkpoint (else its export), one
    checkpoint folder, an export folder or an export file. `kind="export"` reads exports only (`zir.load`),
    `kind="checkpoint"` a run folder's newest checkpoint only (`zir export`)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} is not a run folder nor a zir export (it does not exist)")
    if path.is_dir() and kind != "export":
        if kind == "checkpoint" or list_checkpoints(path / "checkpoints"):
            where, (state, trainer, ema_state) = latest_checkpoint(path / "checkpoints")
            return _with_ema(state, trainer, ema_state, where, ema, run_dir=path)
        if (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file():  # one checkpoint folder
            state, trainer, ema_state = load_checkpoint(path)
            return _with_ema(state, trainer, ema_state, path, ema, run_dir=path.parent.parent)
    export = path if path.is_file() else next(
        (p for p in (path / MODEL_FILE, path / "export" / MODEL_FILE) if p.is_file()), None)
    if export is None and kind == "export":
        raise RunError(f"{path} holds no model.safetensors; run `zir export {path}` first")
    if export is None:
        raise RunError(f"{path} has no checkpoint nor export to load (train it first)")
    return _read_export(export, run_dir=path if path.is_dir() else path.parent)


def _with_ema(state, trainer, ema_state, where: Path, ema: bool, run_dir: Path) -> RunWeights:
    if ema:
        if ema_state is None:
            raise RunError(f"{run_dir} keeps no weight EMA (train.ema was off)")
        state = {**state, **ema_state}
    return RunWeights(state, where, int(trainer["step"]), ema, run_dir)


def _read_export(export: Path, run_dir: Path) -> RunWeights:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(export), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(export))
    except Exception as err:  # noqa: BLE001 - safetensors and OS errors alike mean the file is unusable
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{export} is not a readable safetensors file ({first})") from None
    step = meta.get("step", "0") or "0"
    if not step.isdigit():
        raise RunError(f"{export}: its step metadata {step!r} is not a whole number")
    return RunWeights(state, export, int(step), meta.get("ema") == "True", run_dir, meta)


def load_run(path: str | os.PathLike, ema: bool = False, device: str | torch.device = "cpu",
             kind: str = "any") -> LoadedRun:
    """The model `path` stands for (see `run_weights()`), in eval mode on `device`, with the run's config.

    A checkpoint's model is built from the run's config.yaml; an export's from the model config stored in it
    (its config.yaml beside it, or in the run folder, is the run's config when there is one).
    """
    import zir.objectives  # noqa: F401  (registers every objective, so any run's recipe builds)

    weights = run_weights(path, ema=ema, kind=kind)
    if weights.is_export:
        model = _export_model(weights)
        config = _export_config(weights)
    else:
        config = read_run_config(weights.run_dir)
        model = build_run_model(config["model"], origin=str(weights.run_dir / "config.yaml"))
        try:
            model.load_state_dict(weights.state)
        except RuntimeError as err:
            raise RunError(f"{weights.source} does not fit the run's config.yaml: {first_mismatch(err)}") from None
    return LoadedRun(weights.run_dir, config, model.to(device).eval(), weights.step, str(weights.source), weights.ema)


def _export_config(weights: RunWeights) -> dict:
    """An export's run config: config.yaml in its run folder or beside it, else only the model section it holds
    (the model was built from that section; a config.yaml that does not read does not stop the load)."""
    for folder in dict.fromkeys((weights.run_dir, weights.source.parent)):
        try:
            return read_run_config(folder)
        except RunError:
            continue
    return {"model": json.loads(weights.metadata["zir_model"])}


def build_run_model(section: dict, origin: str) -> nn.Module:
    """The model of a run's (or an export's) model section; `factory` must name a registered factory."""
    from zir.models.factories import build_recipe_model

    return build_recipe_model(section, origin=origin)  # registered names only: never imports


def _export_model(weights: RunWeights) -> nn.Module:
    path = weights.source
    if "zir_model" not in weights.metadata:
        raise RunError(f"{path} carries no zir model config; for a tower's weights use zir.create_model(name, weights=...)")
    try:
        section = json.loads(weights.metadata["zir_model"])
    except ValueError:
        raise RunError(f"{path}: its zir_model metadata is not valid JSON") from None
    model = build_run_model(section, origin=f"{path} (zir_model metadata)")
    try:
        missing, unexpected = model.load_state_dict(weights.state, strict=False)
    except RuntimeError as err:  # misshaped tensors; missing and unexpected keys are reported below
        raise RunError(f"{path} does not fit its model config: {first_mismatch(err)}") from None
    if missing or unexpected:
        raise RunError(f"{path} does not fit its model config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def first_mismatch(err: RuntimeError) -> str:
    """The first problem line of load_state_dict's many-line error."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    return lines[0] if lines else str(err).splitlines()[0]


def run_tokenizer(run_dir: str | os.PathLike, config: dict, model: nn.Module) -> Any:
    """The run's text tokenizer: RUN/tokenizer.json, else data.tokenizer (a path, also relative to the run, or a
    shipped name such as shapes), else the model's own; None if none."""
    from zir.data import load_tokenizer
    from zir.data.tokenizer import text_context, tower_tokenizer
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
    return tower_tokenizer(model)
