"""Linear probe: multinomial logistic regression on frozen features, as CLIP (Radford et al., 2021) reports.

The regularisation strength C is chosen on a validation split carved from the training features; the
probe is then refit on all training features with that C and scored once on the held-out test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from zir.errors import ConfigError
from zir.scoring.accuracy import label_columns, topk_accuracy
from zir.scoring.inputs import as_features, as_labels, same_width

__all__ = ["DEFAULT_CS", "evaluate_linear_probe"]

# Inverse regularisation strengths tried, strongest first: a decade apart, wide enough for features of
# very different scales once standardised, small enough to run on a laptop.
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _fit(x: np.ndarray, y: np.ndarray, c: float, standardize: bool, max_iter: int, seed: int):
    """A fitted pipeline (optional standardisation, then L-BFGS logistic regression) for one C."""
    # Imported here: scikit-learn takes about a second to import and only the probe needs it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), clf) if standardize else clf
    return model.fit(x, y)


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> dict[int, float]:
    """Top-1/top-5 accuracy (percent) of `model` on (x, y); a label the model never saw counts as wrong."""
    scores = model.decision_function(x)
    if scores.ndim == 1:  # binary problems give only the second class's margin
        scores = np.stack([-scores, scores], axis=1)
    classes = torch.from_numpy(np.asarray(model.classes_))
    targets = label_columns(classes, torch.from_numpy(y))
    return topk_accuracy(torch.from_numpy(scores), targets, (1, 5))


def evaluate_linear_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    **options: Any,
) -> dict[str, float]:
    """Top-1/top-5 test accuracy (percent) of a logistic-regression probe; see `_evaluate_linear_probe`.

    Runs under one BLAS thread: on a busy 2-core machine OpenBLAS threads spin, and one L-BFGS fit on
    (2000, 128) features took 44 s with two threads against 1 s with one.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # L-BFGS stopping at max_iter is expected on weak (e.g. random-init) features; the score still stands.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _evaluate_linear_probe(train_features, train_labels, test_features, test_labels, **options)


def _evaluate_linear_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    standardize: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Top-1/top-5 test accuracy (percent) of a logistic-regression probe; returns {"top1", "top5", "C", "val_top1"}.

    `val_fraction` of the training rows (stratified by class when every class has two or more rows) pick
    C from `Cs` by validation top-1, ties going to the smaller C; the probe is refit on all training rows.
    `standardize` scales each feature to zero mean and unit variance using training statistics only.
    """
    x_train = as_features(train_features, "train_features")
    x_test = as_features(test_features, "test_features")
    same_width(x_train, x_test, "train_features", "test_features")
    y_train = as_labels(train_labels, x_train.shape[0], "train_labels").numpy()
    y_test = as_labels(test_labels, x_test.shape[0], "test_labels").numpy()
    x_train, x_test = x_train.numpy().astype(np.float64), x_test.numpy().astype(np.float64)

    Cs = [float(c) for c in Cs]
    if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
        raise ConfigError(f"Cs must be a non-empty list of numbers > 0, got {Cs!r}")
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if np.unique(y_train).size < 2:
        raise ConfigError("the linear probe needs training features from at least two classes")

    from sklearn.model_selection import train_test_split

    counts = np.unique(y_train, return_counts=True)[1]
    n_val = int(round(val_fraction * y_train.size))
    stratify = y_train if counts.min() >= 2 and counts.size <= n_val <= y_train.size - counts.size else None
    if n_val < 1 or y_train.size - n_val < 2:
        raise ConfigError(
            f"val_fraction={val_fraction} leaves no validation or fitting rows out of {y_train.size} training samples"
        )
    fit_idx, val_idx = train_test_split(
        np.arange(y_train.size), test_size=n_val, random_state=seed, stratify=stratify
    )
    if np.unique(y_train[fit_idx]).size < 2:
        raise ConfigError("the validation split left fewer than two classes to fit; use more training samples")

    best_c, best_val = Cs[0], -1.0
    for c in sorted(Cs):
        model = _fit(x_train[fit_idx], y_train[fit_idx], c, standardize, max_iter, seed)
        val = _accuracy(model, x_train[val_idx], y_train[val_idx])[1]
        if val > best_val:
            best_c, best_val = c, val

    model = _fit(x_train, y_train, best_c, standardize, max_iter, seed)
    acc = _accuracy(model, x_test, y_test)
    return {"top1": acc[1], "top5": acc[5], "C": best_c, "val_top1": best_val}
