"""Scoring frozen features, below both `zir.train` and `zir.eval`: the weighted k-NN, top-k accuracy and the
checks every protocol runs on the arrays it is handed. Pure functions of tensors; they import only `zir.errors`.

They sit here, not in `zir.eval`, so that the trainer's k-NN monitor (`zir.train.monitor`) and `zir eval`
run the very same k-NN without the trainer importing the evaluation layer above it.
"""

from zir.scoring.accuracy import label_columns, topk_accuracy
from zir.scoring.knn import evaluate_knn, knn_scores

__all__ = ["evaluate_knn", "knn_scores", "label_columns", "topk_accuracy"]
