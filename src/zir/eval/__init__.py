"""Evaluation protocols on frozen features: k-NN, linear probe, retrieval and zero-shot classification.

Extract features once with `extract_features` (cached per run), then hand them to any protocol; each
returns a plain, JSON-serialisable dict of floats, accuracies and recalls in percent.
"""

from zir.eval.features import FeatureCacheError, extract_features
from zir.eval.knn import evaluate_knn, knn_scores
from zir.eval.linear_probe import DEFAULT_CS, evaluate_linear_probe
from zir.eval.retrieval import evaluate_retrieval, retrieval_ranks
from zir.eval.zeroshot import DEFAULT_TEMPLATES, evaluate_zeroshot, zeroshot_classifier

__all__ = [
    "DEFAULT_CS",
    "DEFAULT_TEMPLATES",
    "FeatureCacheError",
    "evaluate_knn",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "extract_features",
    "knn_scores",
    "retrieval_ranks",
    "zeroshot_classifier",
]
