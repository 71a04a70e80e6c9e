"""Run folders after the fact: list them with status and best metrics, export one, load an export."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from zir.errors import ConfigError, WeightsError
from zir.nn.lora import has_lora, merge_lora_state
from zir.train import checkpoint as ckpt
from zir.train.finite import first_nonfinite
from zir.train.run_lock import pid_alive


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """status.json of a run, with `running` turned into `stopped` when its process is gone (same host)."""
    run_dir = Path(run_dir)
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    status = status if isinstance(status, dict) else {}
    status.setdefault("status", "unknown")
    pid = status.get("pid")
    if status.get("status") == "running" and status.get("host") == socket.gethostname() and isinstance(pid, int):
        if not pid_alive(pid):
            status["status"] = "stopped"
    status["checkpoints"] = [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")]
    return status


def list_runs(root: str | os.PathLike = "runs") -> list[dict[str, Any]]:
    """Every run folder under `root` (itself included), newest first, with status, steps and best loss."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder of runs")
    found = [p.parent for p in root.rglob("config.yaml") if (p.parent / "status.json").exists()]
    rows = []
    for run in sorted(found, key=lambda p: (p / "status.json").stat().st_mtime, reverse=True):
        s = run_status(run)
        rows.append({"run": str(run), "name": _text(s.get("name")), "status": _text(s.get("status"), "unknown"),
                     "step": _whole(s.get("step")), "total_steps": _whole(s.get("total_steps")),
                     "best": _loss_at(s.get("best")), "last": s["last"] if isinstance(s.get("last"), dict) else {},
                     "updated": _text(s.get("updated")), "error": _text(s.get("error"))})
    return rows


# status.json is written by zir but read back as untrusted text: a field of the wrong type shows as empty
def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _loss_at(best: Any) -> dict:
    ok = isinstance(best, dict) and isinstance(best.get("loss"), (int, float)) and isinstance(best.get("step"), int)
    return best if ok else {}


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, ema: bool = False) -> Path:
    """Write the newest checkpoint's weights (or their EMA) as one safetensors file with the model config inside,
    and the run's config.yaml beside it; returns the safetensors path. LoRA updates are merged into the weights
    and `model.adapt` left out of both configs, so the export loads as the plain towers."""
    from safetensors.torch import save_file

    from zir.config import read_yaml

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    raw = read_yaml(run_dir / "config.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{run_dir / 'config.yaml'}: expected a mapping with model, data, optim and train sections")
    out = Path(out) if out else run_dir / "export" / "model.safetensors"
    if out.suffix != ".safetensors":
        out = out / "model.safetensors"
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out.parent}: a file is there, not a folder; name a folder or a .safetensors file")
    path, (model_state, state, ema_state) = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if ema:
        if ema_state is None:
            raise ConfigError(f"{run_dir} keeps no weight EMA (train.ema was off)")
        model_state = {**model_state, **ema_state}
    merged = has_lora(model_state)
    if merged:  # LoRA updates folded into their weights: the export is the plain architecture
        model_state = merge_lora_state(model_state)
    if isinstance(raw.get("model"), dict) and "adapt" in raw["model"]:  # freezing and LoRA are training matters
        raw = {**raw, "model": {k: v for k, v in raw["model"].items() if k != "adapt"}}
    bad = first_nonfinite(**{"": model_state})
    if bad:  # written before checkpoints were checked, or by hand
        raise WeightsError(f"checkpoint {path} holds non-finite weights ({bad.strip()}); nothing exported")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out.parent}: cannot make the folder ({err.strerror})") from None
    meta = {"format": "zir", "zir_model": json.dumps(raw.get("model") or {}, sort_keys=True),
            "name": str(raw.get("name", "")), "step": str(state["step"]), "ema": str(bool(ema)), "checkpoint": path.name,
            "lora_merged": str(merged)}
    tmp = out.with_name(out.name + ".tmp")
    save_file(ckpt._cpu_state(model_state), str(tmp), metadata=meta)
    os.replace(tmp, out)
    cfg_tmp = out.with_name("config.yaml.tmp")
    cfg_tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.replace(cfg_tmp, out.with_name("config.yaml"))
    return out


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A model from `zir export` output (the safetensors file, its folder, or a run folder), in eval mode.

    The file's model config is data: a `factory` in it must name a factory registered in this process.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from zir.models.factories import build_recipe_model

    path = Path(path)
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "export" / "model.safetensors"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise WeightsError(f"{path} holds no model.safetensors; run `zir export {path}` first")
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    if "zir_model" not in meta:
        raise WeightsError(f"{path} carries no zir model config; for a tower's weights use zir.create_model(name, weights=...)")
    try:
        section = json.loads(meta["zir_model"])
    except ValueError:
        raise WeightsError(f"{path}: its zir_model metadata is not valid JSON") from None
    model = build_recipe_model(section, origin=f"{path} (zir_model metadata)")  # registered names only: never imports
    state = load_file(str(path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # misshaped tensors; missing and unexpected keys are reported below
        raise WeightsError(f"{path} does not fit its model config: {first_mismatch(err)}") from None
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit its model config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval()


def first_mismatch(err: RuntimeError) -> str:
    """The first problem line of load_state_dict's many-line error."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    return lines[0] if lines else str(err).splitlines()[0]
