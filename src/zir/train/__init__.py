"""The training engine: the trainer loop, checkpoints, schedules, weight EMA, distributed set-up, runs."""

from zir.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from zir.train.schedule import lr_factor
from zir.train.runner import resume, train
from zir.train.trainer import Trainer, TrainingDiverged, TrainingInterrupted, build_model

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "build_model", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "lr_factor", "resume", "save_checkpoint", "train"]
