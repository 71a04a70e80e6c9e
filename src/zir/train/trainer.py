"""The training loop every recipe runs: AdamW, warm-up + cosine, accumulation, clipping, mixed precision,
non-finite step guard, checkpoints with exact resume, signals, DDP under torchrun, progress and metrics.

`train(cfg, "runs/mae")` starts a run folder; `resume("runs/mae")` continues one. On CPU a resumed run
ends with exactly the weights of an uninterrupted one: the model, optimizer, RNG and the data position
(epoch and samples consumed) are all restored, and data loading never touches the global RNG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zir.config import Config
from zir.data import Loader, open_source
from zir.errors import ConfigError, WeightsError, ZirError
from zir.train import checkpoint as ckpt
from zir.train import distributed, finite
from zir.train.compat import fit_optimizer_state
from zir.train.optim_state import align_optimizer_state
from zir.train.data_stream import DataStream
from zir.train.distributed import shard_model
from zir.train.ema import WeightEMA
from zir.train.metrics_log import MetricsLog, _tensorboard
from zir.train.progress import Progress
from zir.train.budget import BUDGET_RESOLUTION, NO_STEP_LIMIT, BudgetClock
from zir.train.precision import resolve_precision
from zir.train.recipe_model import build_model, view_plan_for
from zir.train.rng import rng_state, set_rng_state
from zir.train.schedule import Schedule

log = logging.getLogger("zir.train")


class TrainingDiverged(ZirError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was."""


class TrainingInterrupted(ZirError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# -- state helpers -----------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model, (nn.parallel.DistributedDataParallel,)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


# -- the trainer -------------------------------------------------------------------------------------

class Trainer:
    """One run: builds model, data and optimizer from a Config, and trains into a run folder."""

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool | None = None):
        self.cfg, self.run_dir, self.resuming = cfg, Path(run_dir), resume
        self.progress = progress
        self.dist = distributed.setup(cfg.train.device)
        self.device = self.dist.device
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._stop: int | None = None
        self._build()

    # set-up ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, d = self.cfg, self.dist
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.precision = resolve_precision(t.precision, self.device, self._recorded_precision())
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.precision='fp16' needs CUDA (this run is on {self.device.type}); use bf16 or fp32")
        self.fsdp = t.strategy == "fsdp" and d.enabled
        if self.fsdp and t.ema:
            raise ConfigError("train.ema with train.strategy='fsdp' is not available yet; use ddp or leave train.ema off")
        per = d.world_size * t.accum_steps
        if cfg.data.batch_size % per:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} is not divisible by {d.world_size} processes x "
                              f"train.accum_steps={t.accum_steps}; it is the global batch of one optimizer step")
        self.micro_batch = cfg.data.batch_size // per

        torch.manual_seed(t.seed)  # same initial weights on every rank
        self.model = build_model(cfg.model).to(self.device)
        if not self.resuming and cfg.model.get("init"):  # before the weight EMA copies the model
            from zir.train.init_weights import init_from

            copied = init_from(self.model, cfg.model["init"])
            if d.main:
                log.info("model.init: towers %s from %s", ", ".join(f"{k} <- {v}" for k, v in copied.items()),
                         cfg.model["init"])
        self.plan = view_plan_for(self.model, cfg)
        source = open_source(cfg.data.source, split=cfg.data.split, data_root=cfg.data.data_root, **cfg.data.options)
        tokenizer, self.tokenizer_file = None, None
        if cfg.data.tokenizer:
            from zir.data import load_tokenizer
            from zir.data.tokenizer import text_context
            from zir.recipes import tokenizer_path

            self.tokenizer_file = tokenizer_path(cfg.data.tokenizer)  # a path, or a shipped name such as shapes
            tokenizer = load_tokenizer(self.tokenizer_file, context_length=text_context(self.model))
        elif getattr(self.model, "tokenizer", None) is not None:
            tokenizer = self.model.tokenizer
        else:
            from zir.data.tokenizer import tower_tokenizer

            tokenizer = tower_tokenizer(self.model)  # a pretrained text tower's own (LiT)
        self.loader = Loader(source, self.plan, self.micro_batch, workers=cfg.data.workers, shuffle=True,
                             drop_last=True, tokenizer=tokenizer, rank=d.rank, world_size=d.world_size)
        if t.steps is not None:
            self.total_steps = t.steps
        elif t.epochs is None:  # a time budget alone: no step limit
            self.total_steps = NO_STEP_LIMIT
        else:
            per_epoch = len(self.loader) // t.accum_steps
            if per_epoch < 1:
                raise ConfigError(f"data {source.name}: fewer samples than one step of {cfg.data.batch_size}")
            self.total_steps = max(1, math.ceil(t.epochs * per_epoch))

        if self.fsdp:
            shard_model(self.model)
        groups = self.model.param_groups(cfg.optim.weight_decay, layer_decay=cfg.optim.layer_decay, base_lr=cfg.optim.lr)
        self.params = [p for g in groups for p in g["params"]]
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, **fused)
        self.budget = BudgetClock(t.time_budget, t.budget_clock) if t.time_budget else None
        self.schedule = Schedule(self.optimizer, BUDGET_RESOLUTION if self.budget else self.total_steps, cfg.optim.warmup,
                                 cfg.optim.schedule, cfg.optim.min_lr / cfg.optim.lr, cfg.optim.warmup_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.ema = WeightEMA(self.model, t.ema) if t.ema and d.main else None

        self.net: nn.Module = self.model
        if d.enabled and not self.fsdp:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=t.find_unused_parameters)
        if t.compile:
            self.net = torch.compile(self.net)

        self.step, self.bad_in_row, self.skipped_total = 0, 0, 0
        self.best: dict[str, Any] = {}
        self.elapsed_before = 0.0
        self._spent = 0.0  # of the time budget, as rank 0 counted it at the start of the step
        torch.manual_seed(t.seed + d.rank)  # per-rank stream for dropout and drop-path
        self.stream = DataStream(self.loader)
        if self.resuming:
            self._restore()

    def _recorded_precision(self) -> str | None:
        """The precision a resumed run started with (its status.json), so `auto` is chosen once per run."""
        if not self.resuming:
            return None
        try:
            return json.loads((self.run_dir / "status.json").read_text()).get("precision")
        except (OSError, ValueError, AttributeError):
            return None

    def _restore(self) -> None:
        path, (model_state, state, ema_state) = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        try:
            self._load_states(model_state, state["optimizer"], state.get("strategy", "ddp"))
        except (RuntimeError, ValueError) as err:  # torch's several-line "Error(s) in loading state_dict ..."
            if isinstance(err, ZirError):
                raise
            why = ckpt.describe_mismatch(model_state, self.model.state_dict())
            raise WeightsError(f"checkpoint {path} does not fit this config's model ({why}); a resume keeps its shapes") from None
        ratio = self.cfg.optim.lr / float(state.get("base_lr", self.cfg.optim.lr))
        if ratio != 1.0:  # optim.lr overridden on resume: scale every group's base lr
            for g in self.optimizer.param_groups:
                g["initial_lr"] *= ratio
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and ema_state is not None:
            self.ema.load_state_dict(ema_state)
        self.step = int(state["step"])
        self.bad_in_row = int(state.get("bad_in_row", 0))
        self.skipped_total = int(state.get("skipped_total", 0))
        self.best = dict(state.get("best") or {})
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if self.budget is not None:
            self.budget.before = float(state.get("budget_spent", 0.0))
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank], self.device)
        else:
            torch.manual_seed(self.cfg.train.seed + self.dist.rank + 7919 * self.step)  # fresh, but not a replay
        pos = dict(state.get("data", {}))
        saved_world = int(state.get("world_size", self.dist.world_size))
        if saved_world != self.dist.world_size:  # positions are per rank: keep the global count of samples seen
            log.warning("checkpoint from %d processes, resuming on %d: the data order changes", saved_world, self.dist.world_size)
            for key in ("samples", "batches"):
                pos[key] = int(pos.get(key, 0)) * saved_world // self.dist.world_size
        self.stream = DataStream(self.loader, int(pos.get("epoch", 0)), int(pos.get("samples", 0)), int(pos.get("batches", 0)))
        if self.dist.main:
            log.info("resumed from %s at step %d", path, self.step)

    # checkpoints and status --------------------------------------------------------------------------
    def _gather_rng(self) -> list:
        mine = rng_state(self.device)
        if not self.dist.enabled:
            return [mine]
        out = [None] * self.dist.world_size
        torch.distributed.all_gather_object(out, mine)
        return out

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank takes part)."""
        rngs = self._gather_rng()
        path = None
        model_state, optim_state = self._full_states()
        ema_state = self.ema.state_dict() if self.ema is not None else None
        bad = finite.where_nonfinite(self.dist, model=model_state, optimizer=optim_state, EMA=ema_state)
        if bad:  # never saved: it would rotate out the last good checkpoint and resume into NaN
            raise TrainingDiverged(f"the weights at step {self.step} are not finite ({bad}); no checkpoint written; "
                                   f"{self._last_good()}")
        if self.dist.main:
            state = {
                "step": self.step, "total_steps": self.total_steps, "optimizer": optim_state, "strategy": "fsdp" if self.fsdp else "ddp",
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}, "rng": rngs,
                "data": self.stream.position(), "precision": self.precision,
                "bad_in_row": self.bad_in_row, "skipped_total": self.skipped_total,
                "best": self.best, "elapsed": self.elapsed_before + (time.perf_counter() - self._t0),
                "world_size": self.dist.world_size, "base_lr": self.cfg.optim.lr,
                "budget_spent": self.budget.spent() if self.budget is not None else 0.0,
            }
            path = ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, model_state, state, ema_state,
                                        self.cfg.train.keep_last)
            self.last_ckpt = path
        distributed.barrier(self.dist)
        return path

    def _last_good(self) -> str:
        last = getattr(self, "last_ckpt", None) or (ckpt.list_checkpoints(self.run_dir / "checkpoints") or [None])[-1]
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return f"{where}; try a lower optim.lr, optim.clip_grad, or train.precision=fp32"

    def _full_states(self) -> tuple[dict, dict]:
        """Whole (unsharded) model and optimizer states; under FSDP every rank takes part, rank 0 gets them."""
        if not self.fsdp:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=opts), get_optimizer_state_dict(self.model, self.optimizer, options=opts)

    def _load_states(self, model_state: dict, optim_state: dict, strategy: str) -> None:
        """Put whole states back (sharding them under FSDP)."""
        if strategy != ("fsdp" if self.fsdp else "ddp"):
            raise ConfigError(f"the checkpoint was written with train.strategy={strategy!r}; resume it with the same strategy")
        if not self.fsdp:
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(align_optimizer_state(optim_state, self.optimizer))  # by name
            fit_optimizer_state(self.optimizer)  # 0-d moments of an older checkpoint
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=opts)

    def _status(self, status: str, **extra: Any) -> None:
        if not self.dist.main:
            return
        data = {"name": self.cfg.name, "status": status, "step": self.step, "total_steps": self.total_steps,
                "best": self.best, "last": getattr(self, "last_row", {}), "pid": os.getpid(), "host": socket.gethostname(),
                "world_size": self.dist.world_size, "precision": self.precision, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        _write_json(self.run_dir / "status.json", data)

    # the loop ----------------------------------------------------------------------------------------
    def _autocast(self):
        p = self.precision
        if p == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _signal(self, signum, frame) -> None:
        if self._stop is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self._stop = signum

    def train_step(self) -> dict[str, float]:
        """One optimizer step over accum_steps micro-batches; returns the logged values (`skipped` 1 when not applied)."""
        t = self.cfg.train
        accum = t.accum_steps
        at, total = self.position()
        factor = self.schedule.set(at, self.step)
        sums: dict[str, torch.Tensor] = {}
        extra: dict[str, float] = {}
        n_samples = 0
        for micro in range(accum):
            batch = next(self.stream).to(self.device, non_blocking=True)
            n_samples += len(batch)
            sync = micro == accum - 1 or not self.dist.enabled or self.fsdp  # FSDP reduce-scatters every micro-batch
            with (contextlib.nullcontext() if sync else self.net.no_sync()):
                with self._autocast():
                    out = self.net(batch)
                loss = out.loss.float() / accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            sums["loss"] = sums.get("loss", 0) + loss.detach()
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0) + v.detach().float() / accum
            for k, v in out.metrics.items():
                if k != "loss" and k not in out.terms:
                    extra[k] = extra.get(k, 0.0) + float(v) / accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if hasattr(norm, "full_tensor"):  # FSDP: the norm of the sharded gradients, over all ranks
            norm = norm.full_tensor()
        keys = list(sums)
        # one reduction per step: the loss terms, the grad norm's finiteness and the stop flag of every rank
        vec = torch.stack([sums[k].reshape(()) for k in keys] + [
            torch.as_tensor(float(not torch.isfinite(norm)), device=self.device),
            torch.as_tensor(float(self._stop is not None), device=self.device)]).float()
        vec = distributed.all_sum(vec, self.dist).tolist()
        values = {k: v / self.dist.world_size for k, v in zip(keys, vec)}
        self._stop_everywhere = vec[-1] > 0
        grad_bad = vec[-2] > 0
        loss_bad = not math.isfinite(values["loss"])
        if self.scaler is not None and grad_bad and not loss_bad:
            self.scaler.step(self.optimizer)  # fp16 overflow: the scaler skips the step and lowers its scale
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            return {**values, "lr": self.cfg.optim.lr * factor, "grad_norm": float("inf"), "samples": n_samples, "skipped": 1}
        if loss_bad or grad_bad:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            self.bad_in_row += 1
            self.skipped_total += 1
            what = f"loss={values['loss']}" if loss_bad else f"gradient norm={float(norm)}"
            if self.dist.main:
                log.warning("step %d skipped: non-finite %s (%d in a row)", self.step + 1, what, self.bad_in_row)
            if self.bad_in_row >= t.max_bad_steps:
                raise TrainingDiverged(
                    f"{self.bad_in_row} non-finite steps in a row (last at step {self.step + 1}, {what}); {self._last_good()}")
            self.step += 1
            return {**values, "lr": self.cfg.optim.lr * factor, "grad_norm": float(norm), "samples": n_samples, "skipped": 1}
        clip = self.cfg.optim.clip_grad
        if clip:
            torch.nn.utils.clip_grads_with_norm_(self.params, clip, norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_in_row = 0
        _unwrap(self.model).after_step(at, total)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return {**values, **extra, "lr": self.cfg.optim.lr * factor, "grad_norm": float(norm), "samples": n_samples, "skipped": 0}

    def position(self) -> tuple[int, int]:
        """Where the schedules stand: (step, total steps), or the spent share of the time budget in the same form."""
        if self.budget is None:
            return self.step, self.total_steps
        return min(BUDGET_RESOLUTION - 1, int(self._spent / self.budget.seconds * BUDGET_RESOLUTION)), BUDGET_RESOLUTION

    def _budget_left(self) -> bool:
        """Whether time is left; rank 0's clock decides for every rank, so all stop at the same step."""
        if self.budget is None:
            return True
        mine = self.budget.spent() if self.dist.main else 0.0
        self._spent = float(distributed.all_sum(torch.tensor([mine], dtype=torch.float64), self.dist)[0])
        return self._spent < self.budget.seconds

    def fit(self) -> dict[str, Any]:
        """Train to the last step; returns the summary (also written to summary.json)."""
        d, t = self.dist, self.cfg.train
        self._t0 = time.perf_counter()
        if self.budget is not None:
            self.budget.start()
        metrics = MetricsLog(self.run_dir / "metrics.csv", self.step if self.resuming else None) if d.main else None
        board = _tensorboard(self.run_dir) if d.main and t.tensorboard else None
        old = {}
        if threading_main():
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, self._signal)
        self._stop_everywhere = False
        show = Progress(self, enabled=self.progress) if d.main else None
        self._status("running")
        if d.main:
            span = (f"{self.budget.seconds:g} s of {t.budget_clock} time" if self.budget else "steps")
            span += f" (steps {self.step + 1}-{self.total_steps})" if self.total_steps < NO_STEP_LIMIT else ""
            log.info("%s: %s into %s; batch %d = %d processes x %d accumulation x %d on %s, %s", self.cfg.name,
                     span, self.run_dir, self.cfg.data.batch_size, d.world_size,
                     t.accum_steps, self.micro_batch, self.device, self.precision)
        start_step = self.step
        rate = None
        try:
            if show:
                show.start(start_step)
            while self.step < self.total_steps and self._budget_left():
                tick = time.perf_counter()
                out = self.train_step()
                dt = time.perf_counter() - tick
                if out is not None:
                    sps = out["samples"] * d.world_size / max(dt, 1e-9)
                    rate = sps if rate is None else 0.9 * rate + 0.1 * sps
                    row = {"step": self.step, "epoch": self.stream.epoch, **{k: v for k, v in out.items() if k not in ("samples",)},
                           "samples_per_s": rate, "time_s": self.elapsed_before + time.perf_counter() - self._t0}
                    if math.isfinite(row["loss"]) and (not self.best or row["loss"] < self.best["loss"]):
                        self.best = {"loss": row["loss"], "step": self.step}
                    self.last_row = row
                    if metrics:
                        metrics.write(row)
                    if board is not None:
                        for k, v in row.items():
                            if k != "step" and isinstance(v, (int, float)):
                                board.add_scalar(k, v, self.step)
                    if show:
                        show.update(self.step, row)
                # no periodic checkpoint during a run of bad steps: it could rotate the last good one out
                periodic = t.ckpt_every and self.step % t.ckpt_every == 0 and self.step < self.total_steps and not self.bad_in_row
                if self._stop_everywhere:
                    path = self.save()
                    signum = self._stop or signal.SIGTERM
                    self._status("interrupted", checkpoint=str(path) if path else None)
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} at step {self.step}/{self.total_steps}; checkpoint "
                        f"saved; continue with: zir train --resume {self.run_dir}", signum)
                if periodic:
                    self.save()
                    self._status("running")
            self.save()
            summary = self._summary()
            self._status("finished", summary=summary)
            if d.main:
                _write_json(self.run_dir / "summary.json", summary)
            return summary
        except TrainingDiverged as err:
            self._status("diverged", error=str(err))
            raise
        except TrainingInterrupted:
            raise
        except BaseException as err:
            with contextlib.suppress(OSError):  # a full disk must not hide the error itself
                self._status("failed", error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            raise
        finally:
            if show:
                show.stop()
            if metrics:
                metrics.close()
            if board is not None:
                board.close()
            for s, h in old.items():
                signal.signal(s, h)
            if d.main and (self.loader.report.n_skipped or self.loader.report.converted):
                log.warning("bad data: %s", self.loader.report.summary())

    def _summary(self) -> dict[str, Any]:
        elapsed = self.elapsed_before + time.perf_counter() - self._t0
        last = getattr(self, "last_row", {})
        budget = {"time_budget_s": self.budget.seconds, "budget_clock": self.budget.clock,
                  "budget_spent_s": round(self.budget.spent(), 3)} if self.budget is not None else {}
        return {
            **budget, "name": self.cfg.name, "steps": self.step, "epochs": self.stream.epoch, "time_s": round(elapsed, 3),
            "samples_per_s": last.get("samples_per_s"), "final_loss": last.get("loss"), "best": self.best,
            "skipped_steps": self.skipped_total, "data": self.loader.report.summary(),
            "checkpoint": str(getattr(self, "last_ckpt", "")), "run": str(self.run_dir),
        }

    def close(self) -> None:
        """Leave the process group."""
        distributed.teardown(self.dist)


def threading_main() -> bool:
    """Whether this is the main thread (the only one that may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()
