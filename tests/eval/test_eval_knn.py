"""Weighted k-NN (DINO protocol) against known answers and a brute-force reference."""

import math

import pytest
import torch

from zir.errors import ConfigError, ShapeError, ZirError
from zir.eval import evaluate_knn, knn_scores


def clustered(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 0.05):
    """Features (N, D) tightly around one orthogonal direction per class, and their labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    centres = torch.eye(dim)[:num_classes]
    return centres[labels] + spread * torch.randn(labels.numel(), dim, generator=g), labels


def brute_force_votes(train, train_labels, test, k, temperature):
    """Class votes written out one test sample at a time: {label: summed weight} per test sample."""
    out = []
    for q in test.tolist():
        sims = []
        for x, label in zip(train.tolist(), train_labels.tolist()):
            dot = sum(a * b for a, b in zip(q, x))
            sims.append((dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in x))), label))
        sims.sort(key=lambda s: -s[0])
        votes = {}
        for sim, label in sims[:k]:
            votes[label] = votes.get(label, 0.0) + math.exp(sim / temperature)
        out.append(votes)
    return out


def test_separable_classes_give_full_accuracy():
    train, train_labels = clustered(30, 5, 16, seed=0)
    test, test_labels = clustered(10, 5, 16, seed=1)
    result = evaluate_knn(train, train_labels, test, test_labels)
    assert result == {"top1": 100.0, "top5": 100.0, "k": 20.0, "T": 0.07}


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.5), (20, 0.07)])
def test_votes_match_brute_force(k, temperature):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(60, 6, generator=g), torch.randn(15, 6, generator=g)
    train_labels = torch.tensor([3, 7, 11]).repeat(20)  # sparse labels map to columns 0..2
    votes, classes = knn_scores(train, train_labels, test, k=k, temperature=temperature)
    assert classes.tolist() == [3, 7, 11]
    for row, expected in zip(votes, brute_force_votes(train, train_labels, test, k, temperature)):
        want = torch.tensor([expected.get(c, 0.0) for c in classes.tolist()])
        torch.testing.assert_close(row, want, rtol=1e-4, atol=1e-6)


def test_accuracy_matches_brute_force_predictions():
    g = torch.Generator().manual_seed(5)
    train, test = torch.randn(80, 4, generator=g), torch.randn(40, 4, generator=g)
    train_labels = torch.randint(0, 8, (80,), generator=g)
    test_labels = torch.randint(0, 8, (40,), generator=g)
    ref = brute_force_votes(train, train_labels, test, 10, 0.1)
    top1 = sum(max(v, key=v.get) == t for v, t in zip(ref, test_labels.tolist()))
    top5 = sum(t in sorted(v, key=v.get, reverse=True)[:5] for v, t in zip(ref, test_labels.tolist()))
    result = evaluate_knn(train, train_labels, test, test_labels, k=10, temperature=0.1)
    assert result["top1"] == pytest.approx(100.0 * top1 / 40)
    assert result["top5"] == pytest.approx(100.0 * top5 / 40)


def test_chunking_does_not_change_the_answer():
    g = torch.Generator().manual_seed(2)
    train, test = torch.randn(200, 8, generator=g), torch.randn(57, 8, generator=g)
    labels = torch.randint(0, 10, (200,), generator=g)
    whole, _ = knn_scores(train, labels, test, chunk_size=1000)
    for chunk in (1, 7, 56):
        # Matmuls of other shapes round differently; exp(sim / 0.07) magnifies that to ~1e-6 relative.
        torch.testing.assert_close(knn_scores(train, labels, test, chunk_size=chunk)[0], whole, rtol=1e-5, atol=0)


def test_scale_of_features_does_not_matter():
    train, train_labels = clustered(10, 3, 8, seed=3, spread=0.5)
    test, test_labels = clustered(10, 3, 8, seed=4, spread=0.5)
    a = evaluate_knn(train, train_labels, test, test_labels, k=5)
    b = evaluate_knn(train * 100, train_labels, test * 0.01, test_labels, k=5)
    assert a == b


def test_unknown_test_class_counts_as_wrong_and_numpy_works():
    train, train_labels = clustered(10, 2, 4, seed=0)
    test = train[:4].numpy()
    result = evaluate_knn(train.numpy(), train_labels.numpy(), test, [0, 0, 9, 9], k=3)
    assert result["top1"] == 50.0 and result["top5"] == 50.0


def test_user_errors_are_zir_errors():
    train, labels = clustered(5, 2, 4, seed=0)
    with pytest.raises(ConfigError, match="k=11"):
        evaluate_knn(train, labels, train, labels, k=11)
    with pytest.raises(ConfigError, match="temperature"):
        evaluate_knn(train, labels, train, labels, k=3, temperature=0)
    with pytest.raises(ShapeError, match="width"):
        evaluate_knn(train, labels, train[:, :3], labels, k=3)
    with pytest.raises(ShapeError, match="train_labels"):
        evaluate_knn(train, labels[:-1], train, labels, k=3)
    with pytest.raises(ShapeError, match="integer"):
        evaluate_knn(train, labels.float(), train, labels, k=3)
    with pytest.raises(ZirError, match="NaN"):
        evaluate_knn(train, labels, train * float("nan"), labels, k=3)
