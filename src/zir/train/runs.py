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
from zir.run_loading import first_mismatch  # noqa: F401  (its old home; zir.train.runs.first_mismatch)


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

    from zir.run_loading import read_run_config, run_weights

    run_dir = Path(run_dir)
    raw = read_run_config(run_dir)
    out = Path(out) if out else run_dir / "export" / "model.safetensors"
    if out.suffix != ".safetensors":
        out = out / "model.safetensors"
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out.parent}: a file is there, not a folder; name a folder or a .safetensors file")
    weights = run_weights(run_dir, ema=ema, kind="checkpoint")  # the newest readable checkpoint, EMA folded in
    path, model_state, state = weights.source, weights.state, {"step": weights.step}
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
    """A model from `zir export` output (the safetensors file, its folder, or a run folder), in eval mode;
    or a released checkpoint (a transformers folder, an open_clip / OpenAI CLIP file) as a
    `zir.interop.PretrainedModel` with `encode_image` and `encode_text` (docs/interop.md).

    The file's model config is data: a `factory` in it must name a factory registered in this process.
    """
    from zir.interop import load_pretrained
    from zir.run_loading import load_run

    pretrained = load_pretrained(Path(path))
    if pretrained is not None:
        return pretrained.to(device)
    return load_run(path, device=device, kind="export").model
