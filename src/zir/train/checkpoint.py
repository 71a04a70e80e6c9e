"""The checkpoint format moved to `zir.checkpoint`, below `train` and `eval`, so the one run loader
(`src/zir/run_loading.py`) reads checkpoints without importing the trainer; the old import path stays."""

from zir.checkpoint import (  # noqa: F401
    EMA_FILE, MODEL_FILE, STATE_FILE, CheckpointError, _cpu_state, describe_mismatch, latest_checkpoint,
    list_checkpoints, load_checkpoint, save_checkpoint,
)

__all__ = ["EMA_FILE", "MODEL_FILE", "STATE_FILE", "CheckpointError", "describe_mismatch", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "save_checkpoint"]
