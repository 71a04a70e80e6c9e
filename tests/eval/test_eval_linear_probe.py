"""Linear probe (logistic regression with a C sweep) against known answers."""

import json

import numpy as np
import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.eval import DEFAULT_CS, evaluate_linear_probe


def separable(n_per_class: int, num_classes: int, dim: int, seed: int):
    """Features (N, D) of classes far apart along orthogonal directions, and labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return 5 * torch.eye(dim)[labels] + 0.1 * torch.randn(labels.numel(), dim, generator=g), labels


def test_separable_classes_give_full_accuracy():
    x_train, y_train = separable(20, 6, 12, seed=0)
    x_test, y_test = separable(10, 6, 12, seed=1)
    result = evaluate_linear_probe(x_train, y_train, x_test, y_test)
    assert result["top1"] == 100.0 and result["top5"] == 100.0 and result["val_top1"] == 100.0
    assert result["C"] in DEFAULT_CS
    assert set(result) == {"top1", "top5", "C", "val_top1"}
    assert json.loads(json.dumps(result)) == result


def test_linearly_but_not_cluster_separable_labels():
    # The label is the sign of one coordinate among noise: k-NN struggles, a linear probe should not.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10))
    y = (x[:, 3] > 0).astype(int)
    result = evaluate_linear_probe(x[:300], y[:300], x[300:], y[300:], Cs=(0.1, 10.0))
    assert result["top1"] >= 95.0
    assert result["top5"] == 100.0  # two classes: both are in the top five


def test_random_labels_stay_near_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 8)), rng.integers(0, 4, size=300)
    result = evaluate_linear_probe(x[:200], y[:200], x[200:], y[200:], Cs=(0.01, 1.0))
    assert result["top1"] < 45.0  # chance is 25%


def test_sweep_picks_the_strongest_regularisation_on_ties_and_is_repeatable():
    x_train, y_train = separable(10, 3, 6, seed=2)
    x_test, y_test = separable(5, 3, 6, seed=3)
    a = evaluate_linear_probe(x_train, y_train, x_test, y_test, Cs=(10.0, 1.0, 0.1))
    b = evaluate_linear_probe(x_train, y_train, x_test, y_test, Cs=(10.0, 1.0, 0.1))
    assert a == b and a["C"] == 0.1


def test_unseen_test_class_counts_as_wrong():
    x_train, y_train = separable(10, 2, 4, seed=0)
    x_test, _ = separable(2, 2, 4, seed=1)
    result = evaluate_linear_probe(x_train, y_train, x_test, [0, 0, 7, 7], Cs=(1.0,))
    assert result["top1"] == 50.0 and result["top5"] == 50.0


def test_user_errors_are_zir_errors():
    x, y = separable(4, 2, 4, seed=0)
    with pytest.raises(ConfigError, match="Cs"):
        evaluate_linear_probe(x, y, x, y, Cs=(1.0, -1.0))
    with pytest.raises(ConfigError, match="val_fraction"):
        evaluate_linear_probe(x, y, x, y, val_fraction=1.0)
    with pytest.raises(ConfigError, match="two classes"):
        evaluate_linear_probe(x, torch.zeros(8, dtype=torch.long), x, y)
    with pytest.raises(ConfigError, match="val_fraction"):
        evaluate_linear_probe(x[[0, 4]], y[[0, 4]], x, y, val_fraction=0.1)
    with pytest.raises(ShapeError, match="width"):
        evaluate_linear_probe(x, y, x[:, :2], y)
