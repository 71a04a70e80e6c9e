"""Weighted k-nearest-neighbour classification on frozen features, as DINO evaluates (Caron et al., 2021).

Each test sample votes over its k most cosine-similar training samples, each neighbour weighted by
exp(similarity / T); the class with the largest summed weight wins.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from zir.errors import ConfigError
from zir.scoring.accuracy import label_columns, topk_accuracy
from zir.scoring.inputs import as_features, as_labels, chunk_rows, positive_int, same_width

__all__ = ["knn_scores", "evaluate_knn"]


def knn_scores(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-NN class votes (N_test, C) for each test row, and the class label of each column (C,).

    Features are L2-normalised here, so similarity is cosine whatever the caller passes. The test set is
    processed `chunk_size` rows at a time (by default as many as keep a chunk's similarity block under
    16M entries), so memory stays bounded for large training sets.
    """
    train = F.normalize(as_features(train_features, "train_features"), dim=1)
    test = F.normalize(as_features(test_features, "test_features"), dim=1)
    same_width(train, test, "train_features", "test_features")
    labels = as_labels(train_labels, train.shape[0], "train_labels")
    k = positive_int(k, "k")
    if k > train.shape[0]:
        raise ConfigError(f"k={k} is larger than the {train.shape[0]} training samples")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ConfigError(f"temperature must be a number > 0, got {temperature!r}")

    # Map arbitrary (possibly sparse) labels to columns 0..C-1.
    classes, columns = torch.unique(labels, return_inverse=True)
    rows = chunk_rows(chunk_size, train.shape[0])
    votes = torch.zeros(test.shape[0], classes.numel())
    for start in range(0, test.shape[0], rows):
        sim = test[start : start + rows] @ train.T  # (B, N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (B, k)
        weights = (top_sim / temperature).exp()
        votes[start : start + rows].scatter_add_(1, columns[top_idx], weights)
    return votes, classes


def evaluate_knn(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) of weighted k-NN; returns {"top1", "top5", "k", "T"}.

    Defaults are DINO's (k=20, T=0.07). A test label absent from the training labels counts as wrong.
    """
    votes, classes = knn_scores(
        train_features, train_labels, test_features, k=k, temperature=temperature, chunk_size=chunk_size
    )
    targets = as_labels(test_labels, votes.shape[0], "test_labels")
    acc = topk_accuracy(votes, label_columns(classes, targets), (1, 5))
    return {"top1": acc[1], "top5": acc[5], "k": float(k), "T": float(temperature)}
