"""Checkpoints: weights in safetensors, trainer state beside them, written atomically, the last N kept.

A checkpoint is a folder `checkpoints/step_00000120/` holding `model.safetensors`, `trainer.pt`
(optimizer, scaler, RNG, data position, step; plain tensors and numbers, read with `weights_only=True`)
and, when the run keeps one, `ema.safetensors`. It is written under a temporary name and renamed when
complete, so a kill at any moment leaves every earlier checkpoint readable and no half-written one visible.
Old checkpoints are removed only after the new one is in place, and a re-save of the same step moves the
old copy aside first (`.old-step_N-PID`, still listed until the new one is in place), so even with
`keep_last=1` some complete checkpoint is always visible. A full disk is a one-line `CheckpointError`.
"""

from __future__ import annotations

import errno
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
_ASIDE = re.compile(r"^\.old-step_(\d{8})-\d+$")  # a complete checkpoint moved aside for a re-save of its step
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


def _no_space(err: BaseException, folder: Path) -> bool:
    """Whether a write failed because the disk is full: an OSError, safetensors' wording of one, or (torch.save
    words it as 'unexpected pos') a failed write with less than a MiB left on the folder's file system."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if any(w in str(err) for w in ("No space left on device", "StorageFull", "os error 28")):
        return True
    if not isinstance(err, Exception):
        return False
    try:
        fs = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return fs.f_bavail * fs.f_frsize < 2 ** 20


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: renamed to a hidden name first, so a kill mid-way leaves no half of it listed."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(folder: str | os.PathLike, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, keep_last: int = 3) -> Path:
    """Write checkpoint `step` into `folder` atomically, then delete all but the newest `keep_last`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    aside = folder / f".old-{final.name}-{os.getpid()}"
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
            os.replace(final, aside)  # a kill from here on: the aside copy is complete and still listed
            os.replace(tmp, final)
        else:
            os.replace(tmp, final)
        _fsync(folder)
    except BaseException as err:
        full = _no_space(err, folder)  # before the clean-up frees the space again
        shutil.rmtree(tmp, ignore_errors=True)
        if aside.exists() and not final.exists():
            os.replace(aside, final)
        if full:
            raise CheckpointError(f"no space left on device writing {final}; the older checkpoints are kept") from None
        raise
    if aside.exists():
        shutil.rmtree(aside, ignore_errors=True)
    for stale in folder.iterdir():  # left by a process killed mid-save or mid-delete
        aside_of = _ASIDE.match(stale.name)
        if stale.name.startswith((".tmp-step_", ".trash-")) or (aside_of and stale.parent.joinpath(
                f"step_{aside_of.group(1)}").is_dir()):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(folder)[:-keep_last]:  # only now that the new one is complete and visible
        _remove(old)
    return final


def _complete(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file()


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders, oldest first (a copy moved aside by a re-save cut short counts for its step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        named, aside = _NAME.match(p.name), _ASIDE.match(p.name)
        if (named or aside) and _complete(p):
            step = int((named or aside).group(1))
            if named or step not in found:
                found[step] = p
    return [found[s] for s in sorted(found)]


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


def describe_mismatch(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str:
    """How a checkpoint's weights differ from a model's, in a few words: counts and a first example of each."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    misshaped = [f"{k} {tuple(saved[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                 if k in saved and tuple(saved[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(found)} {what} such as {found[0]}" for what, found in
             (("missing weights", missing), ("unexpected weights", unexpected), ("misshaped weights", misshaped)) if found]
    return "; ".join(parts) or "the optimizer state does not match"
