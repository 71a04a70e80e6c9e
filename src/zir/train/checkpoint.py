"""Checkpoints: weights in safetensors, trainer state beside them, written atomically, the last N kept.

A checkpoint is a folder `checkpoints/step_00000120/` holding `model.safetensors`, `trainer.pt`
(optimizer, scaler, RNG, data position, step; plain tensors and numbers, read with `weights_only=True`)
and, when the run keeps one, `ema.safetensors`. It is written under a temporary name and renamed when
complete, so a kill at any moment leaves every earlier checkpoint readable and no half-written one visible.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zir.errors import WeightsError, ZirError

log = logging.getLogger("zir.train")
_NAME = re.compile(r"^step_(\d{8})$")
MODEL_FILE, STATE_FILE, EMA_FILE = "model.safetensors", "trainer.pt", "ema.safetensors"


class CheckpointError(ZirError):
    """A run folder without a usable checkpoint."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; a tensor sharing memory with an earlier one (tied weights) is copied."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        if ptr is not None and ptr in seen:
            v = v.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = v
    return out


def save_checkpoint(folder: str | os.PathLike, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, keep_last: int = 3) -> Path:
    """Write checkpoint `step` into `folder` atomically and delete all but the newest `keep_last`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step:08d}-", dir=folder))
    try:
        save_file(_cpu_state(model_state), str(tmp / MODEL_FILE), metadata={"format": "zir", "step": str(step)})
        if ema_state is not None:
            save_file(_cpu_state(ema_state), str(tmp / EMA_FILE), metadata={"format": "zir", "step": str(step)})
        with open(tmp / STATE_FILE, "wb") as fh:
            torch.save(trainer_state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for name in (MODEL_FILE, EMA_FILE):
            if (tmp / name).exists():
                _fsync(tmp / name)
        if final.exists():  # a re-save of the same step (e.g. interrupted right after a periodic save)
            old = folder / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".tmp-step_*"):  # left by a process killed mid-save
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor] | None]:
    """(model state, trainer state, EMA state or None) of one checkpoint folder; nothing is unpickled unsafely."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        model_state = load_file(str(path / MODEL_FILE))
        trainer_state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        ema_state = load_file(str(path / EMA_FILE)) if (path / EMA_FILE).exists() else None
    except Exception as err:  # noqa: BLE001 - safetensors, pickle and OS errors all mean "unreadable"
        raise WeightsError(f"checkpoint {path} is unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not isinstance(trainer_state, dict) or type(trainer_state.get("step")) is not int:
        raise WeightsError(f"checkpoint {path}: {STATE_FILE} holds no trainer state")
    return model_state, trainer_state, ema_state


def latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, tuple]:
    """The newest checkpoint that loads, with its contents; an unreadable newer one is skipped with a warning.

    When none loads there is no warning, only the error, which names why the newest one failed: a user sees
    one line, not a promise of an older checkpoint followed by the news that there is none.
    """
    found = list_checkpoints(folder)
    failures: list[WeightsError] = []
    for path in reversed(found):
        try:
            loaded = path, load_checkpoint(path)
        except WeightsError as err:
            failures.append(err)
            continue
        for err in failures:
            log.warning("%s; using the older %s", err, path.name)
        return loaded
    if not found:
        raise CheckpointError(f"{folder}: no readable checkpoint")
    raise CheckpointError(f"{folder}: no readable checkpoint (found {len(found)}, all unreadable; newest: {failures[0]})")
