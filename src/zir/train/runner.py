"""The entry points: `train(cfg, out)` starts a run folder, `resume(run)` continues one.

Everything is built before anything is written (a refused start leaves the folder as it was), under the run
folder's lock (one live process per run).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from zir.config import Config, from_dict, load_config, read_yaml, save_config, apply_overrides
from zir.errors import ConfigError
from zir.train import checkpoint as ckpt
from zir.train.run_folder import claimed, keep_tokenizer, launched_as_rank0, setup_logging
from zir.train.trainer import Trainer

log = logging.getLogger("zir.train")


def _run(cfg: Config, run_dir: Path, resume: bool, progress: bool | None, write_config: bool) -> dict[str, Any]:
    """Build everything first: a start refused there (bad value, data, checkpoint) writes nothing into run_dir."""
    runlog = setup_logging(run_dir, launched_as_rank0())
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, progress=progress)
        try:
            if runlog is not None:
                if write_config:
                    save_config(cfg, run_dir / "config.yaml")
                if trainer.tokenizer_file is not None:
                    keep_tokenizer(trainer.tokenizer_file, run_dir)
                runlog.start()
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        if runlog is not None:
            runlog.close()


def train(cfg: Config | str | os.PathLike, out: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
          progress: bool | None = None) -> dict[str, Any]:
    """Start a run in folder `out` from a Config or a recipe path (with dotted overrides); returns the summary."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg, overrides)
    elif overrides:
        cfg = from_dict(apply_overrides(cfg.to_dict(), list(overrides)))
    run_dir = Path(out)
    from zir.interop.model_init import adopt_released_towers
    from zir.train.init_weights import check_init

    adopt_released_towers(cfg)  # a released CLIP's towers and tokenizer replace the recipe's
    check_init(cfg.model)
    with claimed(run_dir, create=True, main=launched_as_rank0()):  # a live run in it is refused first, naming it
        if ckpt.list_checkpoints(run_dir / "checkpoints") or (run_dir / "metrics.csv").exists():
            raise ConfigError(f"run folder {run_dir} already holds a run: continue it with `zir train --resume {run_dir}` "
                              f"or choose another --out")
        return _run(cfg, run_dir, False, progress, write_config=True)


def resume(run_dir: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), progress: bool | None = None) -> dict[str, Any]:
    """Continue the run in `run_dir` from its newest readable checkpoint (overrides such as train.steps=N extend it)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    # refused while the run is alive; config.yaml takes the overrides only once they have built a trainer (_run),
    # so a refused resume leaves the folder as it was
    with claimed(run_dir, create=False, main=launched_as_rank0()):
        raw = read_yaml(run_dir / "config.yaml")
        cfg = from_dict(apply_overrides(raw, list(overrides)), origin=str(run_dir / "config.yaml"))
        if not ckpt.list_checkpoints(run_dir / "checkpoints"):
            raise ckpt.CheckpointError(f"{run_dir} has no checkpoint yet; start it again with zir train")
        return _run(cfg, run_dir, True, progress, write_config=bool(overrides))
