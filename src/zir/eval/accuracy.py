"""Top-k accuracy from a score matrix: it lives in `zir.scoring.accuracy`; this module keeps its old import path."""

from zir.scoring.accuracy import label_columns, topk_accuracy

__all__ = ["label_columns", "topk_accuracy"]
