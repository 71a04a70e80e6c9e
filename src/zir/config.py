"""Typed recipe configs: YAML recipes plus dotted command-line overrides, validated field by field.

A recipe has five sections: `name`, `model` (free-form, handed to `zir.model.build_model`), `data`,
`optim` and `train` (typed below). `load_config("mae", ["optim.lr=5e-4", "train.steps=50"])` reads the
shipped recipe (or a YAML path), applies the overrides and returns a `Config`; every bad field raises a
`ConfigError` naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zir.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
STRATEGIES = ("ddp", "fsdp")
BUDGET_CLOCKS = ("wall", "cpu")
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_MONITOR_SAMPLES = 5000  # the k-NN monitor keeps its images decoded: 5000 at 224x224 is 3 GB of float32
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a plain name: runs/NAME stays inside runs/


@dataclass
class DataConfig:
    """Where samples come from and how many an optimizer step sees."""

    source: str = "shapes"  # a built-in name or a path, as `zir.data.open_source` takes
    split: str = "train"
    batch_size: int = 64  # global: samples per optimizer step over all ranks and accumulation steps
    workers: int = 0
    data_root: str | None = None
    options: dict = field(default_factory=dict)  # extra keyword arguments of the source (e.g. n, size)
    plan: dict = field(default_factory=dict)  # overrides of the model's view plan fields (pipeline, seed, ...)
    tokenizer: str | None = None  # a shipped tokenizer name (shapes, flickr8k) or a tokenizer.json, for text views


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-3  # peak learning rate, reached at the end of warm-up
    min_lr: float = 0.0  # where the cosine ends
    weight_decay: float = 0.05  # off for norms, biases, tokens and position embeddings (the model's groups)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float | None = None  # layer-wise lr decay for fine-tuning (e.g. 0.65); None: off
    warmup: float = 0.05  # fraction of the steps spent warming up linearly from 0
    warmup_steps: int = 0  # and at least this many optimizer steps (a short time budget makes 5% a few steps)
    schedule: str = "cosine"
    clip_grad: float | None = 1.0  # max global gradient norm; None or 0: no clipping


@dataclass
class TrainConfig:
    """How long to train, on what, and how the run is kept."""

    steps: int | None = None  # optimizer steps; or give epochs
    epochs: float | None = None
    accum_steps: int = 1  # micro-batches per optimizer step (the global batch stays data.batch_size)
    precision: str = "fp32"  # auto (bf16 where native, else fp32), fp32, bf16 (autocast), fp16 (CUDA, gradient scaler)
    compile: bool = False  # torch.compile the model
    device: str = "auto"
    seed: int = 0
    log_every: int = 10  # steps between printed lines when no progress bar is shown
    ckpt_every: int = 100  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept
    max_bad_steps: int = 5  # non-finite steps in a row before the run stops
    ema: float | None = None  # decay of an exponential moving average of the weights; None: off
    strategy: str = "ddp"  # ddp or fsdp when started by torchrun
    find_unused_parameters: bool = False  # for DDP when some parameters get no gradient in a step
    threads: int | None = None  # torch CPU threads per process
    tensorboard: bool = False  # also write the metrics as TensorBoard scalars to RUN/tensorboard (needs tensorboard)
    # a time budget in seconds: training stops once it is spent, and the lr and objective schedules follow the
    # spent fraction instead of the step count (steps/epochs, if given, stay an upper limit)
    time_budget: float | None = None
    budget_clock: str = "wall"  # wall (elapsed time) or cpu (this process's CPU time: fair on a shared machine)
    # the k-NN monitor: every monitor_every steps (0: off), the weighted k-NN top-1 of the image tower's pooled
    # features, a bank of monitor_samples / 2 samples of the data's train split against as many held-out ones
    monitor_every: int = 0
    monitor_data: str | None = None  # a labelled source (shapes, cifar10:test, a path); null: the run's data.source
    monitor_samples: int = 1000  # decoded once and kept in memory: half the bank, half the queries
    monitor_k: int = 20
    monitor_temperature: float = 0.07


@dataclass
class Config:
    """A whole recipe: name, model section (free-form), data, optim and train."""

    name: str = "run"
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain dicts and lists, as written to config.yaml."""
        out = dataclasses.asdict(self)
        out["optim"]["betas"] = list(self.optim.betas)
        return out


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def _describe(tp: Any) -> str:
    """A reader's name of a field type."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return f"{_describe(rest[0])} or null"
    if typing.get_origin(tp) is tuple:
        return f"a list of {len(args)} numbers"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp`, or a ConfigError naming `where`, the value and the expected type."""
    args = typing.get_args(tp)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    bad = ConfigError(f"{where}={value!r}: expected {_describe(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise bad from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad
        try:
            number = float(value)  # YAML reads 5e-4 (no dot) as a string
        except (ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number):  # inf or nan would train to non-finite weights, or never stop
            raise ConfigError(f"{where}={value!r}: expected a finite number")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if tp is dict:
        if isinstance(value, dict):
            return value
        if value is None:
            return {}
        raise bad
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    raise bad


def _typed(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass `cls` from a raw mapping, naming unknown fields and bad values."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping of fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise ConfigError(f"{section}.{key}: no such field{hint}; {section} fields: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def check_run_name(name: str) -> str:
    """`name` when it is a plain name (letters, digits, -_., not starting with a dot): runs/NAME cannot leave runs/."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ConfigError(f"name={name!r}: expected a plain name of letters, digits, - _ and . (not starting with a "
                          "dot, no / or \\), as it names the run folder runs/NAME; choose the folder with --out")
    return name


def _check(cfg: Config) -> None:
    """Range and choice checks that need more than a type."""

    def need(ok: bool, where: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{where}={value!r}: expected {allowed}")

    check_run_name(cfg.name)
    d, o, t = cfg.data, cfg.optim, cfg.train
    need(d.batch_size >= 1, "data.batch_size", d.batch_size, "a whole number >= 1")
    need(d.workers >= 0, "data.workers", d.workers, "a whole number >= 0")
    need(o.lr > 0, "optim.lr", o.lr, "a number > 0")
    need(0 <= o.min_lr <= o.lr, "optim.min_lr", o.min_lr, f"a number between 0 and optim.lr={o.lr}")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
    need(all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas), "two numbers in [0, 1)")
    need(o.eps > 0, "optim.eps", o.eps, "a number > 0")
    need(o.layer_decay is None or 0 < o.layer_decay <= 1, "optim.layer_decay", o.layer_decay, "a number in (0, 1] or null")
    need(0 <= o.warmup < 1, "optim.warmup", o.warmup, "a fraction of the steps, 0 <= warmup < 1")
    need(isinstance(o.warmup_steps, int) and o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "a whole number >= 0")
    need(o.schedule in SCHEDULES, "optim.schedule", o.schedule, "one of " + ", ".join(SCHEDULES))
    need(o.clip_grad is None or o.clip_grad >= 0, "optim.clip_grad", o.clip_grad, "a number >= 0 or null")
    need(t.steps is None or t.steps >= 1, "train.steps", t.steps, "a whole number >= 1")
    need(t.epochs is None or t.epochs > 0, "train.epochs", t.epochs, "a number > 0")
    need(t.time_budget is None or t.time_budget > 0, "train.time_budget", t.time_budget, "seconds > 0 or null")
    need(t.budget_clock in BUDGET_CLOCKS, "train.budget_clock", t.budget_clock, "one of " + ", ".join(BUDGET_CLOCKS))
    if t.steps is None and t.epochs is None and t.time_budget is None:
        raise ConfigError("train.steps, train.epochs and train.time_budget are all unset: give one, e.g. train.steps=100")
    need(t.accum_steps >= 1, "train.accum_steps", t.accum_steps, "a whole number >= 1")
    need(t.precision in PRECISIONS, "train.precision", t.precision, "one of " + ", ".join(PRECISIONS))
    need(t.device in DEVICES or t.device.startswith("cuda:"), "train.device", t.device, "one of " + ", ".join(DEVICES) + " or cuda:N")
    need(t.log_every >= 1, "train.log_every", t.log_every, "a whole number >= 1")
    need(t.ckpt_every >= 0, "train.ckpt_every", t.ckpt_every, "a whole number >= 0 (0: only at the end)")
    need(t.keep_last >= 1, "train.keep_last", t.keep_last, "a whole number >= 1")
    need(t.max_bad_steps >= 1, "train.max_bad_steps", t.max_bad_steps, "a whole number >= 1")
    need(t.ema is None or 0 < t.ema < 1, "train.ema", t.ema, "a decay in (0, 1) or null")
    need(t.strategy in STRATEGIES, "train.strategy", t.strategy, "one of " + ", ".join(STRATEGIES))
    need(t.threads is None or t.threads >= 1, "train.threads", t.threads, "a whole number >= 1 or null")
    need(t.monitor_every >= 0, "train.monitor_every", t.monitor_every, "a whole number >= 0 (0: no k-NN monitor)")
    need(2 <= t.monitor_samples <= MAX_MONITOR_SAMPLES, "train.monitor_samples", t.monitor_samples,
         f"a whole number from 2 to {MAX_MONITOR_SAMPLES} (the monitor keeps its images decoded in memory)")
    need(1 <= t.monitor_k <= t.monitor_samples // 2, "train.monitor_k", t.monitor_k,
         f"a whole number from 1 to train.monitor_samples / 2 = {t.monitor_samples // 2} (the k-NN bank)")
    need(t.monitor_temperature > 0, "train.monitor_temperature", t.monitor_temperature, "a number > 0")
    need(t.monitor_data is None or t.monitor_data.strip() != "", "train.monitor_data", t.monitor_data,
         "a labelled source (shapes, cifar10:test, a folder of class sub-folders) or null")
    if d.batch_size % t.accum_steps:
        raise ConfigError(f"data.batch_size={d.batch_size} is not divisible by train.accum_steps={t.accum_steps}")
    if not isinstance(cfg.model, dict) or not cfg.model:
        raise ConfigError("model: expected a mapping with towers and objectives (see `zir recipes`)")
    from zir.models.factories import factory_name

    factory_name(cfg.model)  # a registered name or nothing: a recipe never names code to import


def from_dict(raw: dict, origin: str = "config") -> Config:
    """A validated Config from a plain dict (a parsed recipe)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping with model, data, optim and train sections")
    allowed = ["name", "model", *_SECTIONS]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(f"{origin}: unknown section {unknown[0]!r}; sections: {', '.join(allowed)}")
    try:
        cfg = Config(
            name=str(raw.get("name") or "run"),
            model=copy.deepcopy(raw.get("model") or {}),
            **{name: _typed(cls, raw.get(name), name) for name, cls in _SECTIONS.items()},
        )
        _check(cfg)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from None
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=5e-4' -> (['optim', 'lr'], 5e-4); the value is read as YAML (lists, null, true work)."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in path):
        raise ConfigError(f"override {text!r}: expected section.field=value, e.g. optim.lr=5e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """A copy of `raw` with each dotted override set (missing mappings are created for `model.*`)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in ("name", "model", *_SECTIONS):
            raise ConfigError(f"override {text!r}: unknown section {path[0]!r}; sections: name, model, data, optim, train")
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i + 1])} is {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | os.PathLike) -> dict:
    """A recipe file as a dict, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text, so not a YAML recipe") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return raw or {}


def load_config(recipe: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (a YAML path, or the name of a shipped one such as "clip"), apply dotted overrides and
    validate; errors name the file or the override."""
    from zir.recipes import recipe_path

    path = recipe_path(recipe)
    origin = str(path) if path == Path(recipe) else f"recipe {recipe}"
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping with model, data, optim and train sections")
    raw = apply_overrides(raw, list(overrides))
    return from_dict(raw, origin=origin)


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return path
