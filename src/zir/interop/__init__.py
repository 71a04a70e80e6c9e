"""Weights in and out: released checkpoints (transformers, open_clip) as zir towers, and zir runs as theirs."""

from zir.interop.load import is_foreign, load_pretrained
from zir.interop.pretrained import PretrainedModel

__all__ = ["PretrainedModel", "is_foreign", "load_pretrained"]
