"""Weighted k-NN on frozen features (DINO's protocol): it lives in `zir.scoring.knn`, below the trainer, so the
training monitor and `zir eval` share one implementation; this module keeps its old import path."""

from zir.scoring.knn import evaluate_knn, knn_scores

__all__ = ["knn_scores", "evaluate_knn"]
