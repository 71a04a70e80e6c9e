"""A trainer's checkpoints: its live state written into `trainer.pt` and the weights files, and read back.

`trainer.pt` keeps the layout it has always had, so older runs resume: `step`, `total_steps`, `optimizer`
(whole, gathered under FSDP), `strategy`, `scaler`, `rng` (one state per rank), `data` (the `DataStream`
position, per rank), `precision`, `bad_in_row`, `skipped_total`, `best`, `elapsed`, `world_size`, `base_lr`
and `budget_spent`. Every rank takes part in a save; rank 0 writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from zir.errors import ConfigError, WeightsError, ZirError
from zir.train import checkpoint as ckpt
from zir.train import distributed, finite
from zir.train.compat import fit_optimizer_state
from zir.train.data_stream import DataStream
from zir.train.optim_state import align_optimizer_state
from zir.train.rng import rng_state, set_rng_state
from zir.train.train_state import TrainState

if TYPE_CHECKING:
    from zir.train.trainer import Trainer

log = logging.getLogger("zir.train")


def save(tr: Trainer) -> Path | None:
    """Write a checkpoint of the current step; non-finite weights are refused (TrainingDiverged), never written."""
    rngs = gather_rng(tr)
    path = None
    model_state, optim_state = full_states(tr)
    ema_state = tr.ema.state_dict() if tr.ema is not None else None
    bad = finite.where_nonfinite(tr.dist, model=model_state, optimizer=optim_state, EMA=ema_state)
    if bad:  # never saved: it would rotate out the last good checkpoint and resume into NaN
        raise finite.TrainingDiverged(f"the weights at step {tr.state.step} are not finite ({bad}); no checkpoint written; "
                                      f"{last_good(tr)}")
    if tr.dist.main:
        s = tr.state
        state = {
            "step": s.step, "total_steps": tr.total_steps, "optimizer": optim_state, "strategy": _strategy(tr),
            "scaler": tr.scaler.state_dict() if tr.scaler is not None else {}, "rng": rngs,
            "data": tr.stream.position(), "precision": tr.precision,
            "bad_in_row": s.bad_in_row, "skipped_total": s.skipped_total,
            "best": s.best, "elapsed": tr.elapsed(),
            "world_size": tr.dist.world_size, "base_lr": tr.cfg.optim.lr,
            "budget_spent": tr.budget.spent() if tr.budget is not None else 0.0,
        }
        path = ckpt.save_checkpoint(tr.run_dir / "checkpoints", s.step, model_state, state, ema_state,
                                    tr.cfg.train.keep_last)
        s.last_checkpoint = path
    distributed.barrier(tr.dist)
    return path


def restore(tr: Trainer) -> None:
    """Continue from the newest readable checkpoint: weights, optimizer, scaler, EMA, RNG, loop state, data position."""
    path, (model_state, state, ema_state) = ckpt.latest_checkpoint(tr.run_dir / "checkpoints")
    try:
        load_states(tr, model_state, state["optimizer"], state.get("strategy", "ddp"))
    except (RuntimeError, ValueError) as err:  # torch's several-line "Error(s) in loading state_dict ..."
        if isinstance(err, ZirError):
            raise
        why = ckpt.describe_mismatch(model_state, tr.model.state_dict())
        raise WeightsError(f"checkpoint {path} does not fit this config's model ({why}); a resume keeps its shapes") from None
    ratio = tr.cfg.optim.lr / float(state.get("base_lr", tr.cfg.optim.lr))
    if ratio != 1.0:  # optim.lr overridden on resume: scale every group's base lr
        for g in tr.optimizer.param_groups:
            g["initial_lr"] *= ratio
    if tr.scaler is not None and state.get("scaler"):
        tr.scaler.load_state_dict(state["scaler"])
    if tr.ema is not None and ema_state is not None:
        tr.ema.load_state_dict(ema_state)
    tr.state = TrainState.from_checkpoint(state)
    if tr.budget is not None:
        tr.budget.before = tr.state.budget_spent_before
    rngs = state.get("rng") or []
    if len(rngs) == tr.dist.world_size:
        set_rng_state(rngs[tr.dist.rank], tr.device)
    else:
        torch.manual_seed(tr.cfg.train.seed + tr.dist.rank + 7919 * tr.state.step)  # fresh, but not a replay
    tr.stream = DataStream(tr.loader, **_data_position(state, tr.dist.world_size))
    if tr.dist.main:
        log.info("resumed from %s at step %d", path, tr.state.step)


def _data_position(state: dict, world_size: int) -> dict[str, int]:
    """The saved per-rank data position; from a different number of processes, the same global count of samples."""
    pos = dict(state.get("data", {}))
    saved_world = int(state.get("world_size", world_size))
    if saved_world != world_size:  # positions are per rank: keep the global count of samples seen
        log.warning("checkpoint from %d processes, resuming on %d: the data order changes", saved_world, world_size)
        for key in ("samples", "batches"):
            pos[key] = int(pos.get(key, 0)) * saved_world // world_size
    return {key: int(pos.get(key, 0)) for key in ("epoch", "samples", "batches")}


def last_good(tr: Trainer) -> str:
    """Where a diverged run can go back to, and what to change: the end of its TrainingDiverged message."""
    last = tr.state.last_checkpoint or (ckpt.list_checkpoints(tr.run_dir / "checkpoints") or [None])[-1]
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return f"{where}; try a lower optim.lr, optim.clip_grad, or train.precision=fp32"


def gather_rng(tr: Trainer) -> list:
    """Every rank's RNG state, in rank order (each rank draws its own dropout and drop-path)."""
    mine = rng_state(tr.device)
    if not tr.dist.enabled:
        return [mine]
    out = [None] * tr.dist.world_size
    torch.distributed.all_gather_object(out, mine)
    return out


def _strategy(tr: Trainer) -> str:
    return "fsdp" if tr.fsdp else "ddp"


def full_states(tr: Trainer) -> tuple[dict, dict]:
    """Whole (unsharded) model and optimizer states; under FSDP every rank takes part, rank 0 gets them."""
    if not tr.fsdp:
        return tr.model.state_dict(), tr.optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(tr.model, options=opts), get_optimizer_state_dict(tr.model, tr.optimizer, options=opts)


def load_states(tr: Trainer, model_state: dict, optim_state: dict, strategy: str) -> None:
    """Put whole states back (sharding them under FSDP); a checkpoint resumes only under its own strategy."""
    if strategy != _strategy(tr):
        raise ConfigError(f"the checkpoint was written with train.strategy={strategy!r}; resume it with the same strategy")
    if not tr.fsdp:
        tr.model.load_state_dict(model_state)
        tr.optimizer.load_state_dict(align_optimizer_state(optim_state, tr.optimizer))  # by name
        fit_optimizer_state(tr.optimizer)  # 0-d moments of an older checkpoint
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(tr.model, model_state, options=opts)
    set_optimizer_state_dict(tr.model, tr.optimizer, optim_state, options=opts)
