"""Zero-shot classification: class embeddings from prompt-template ensembles (Radford et al., 2021).

Each class name is written into every template ("a photo of a {}."), the text tower encodes the prompts,
and the normalised mean of their normalised embeddings is the class's row of a (C, D) classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from zir.errors import ConfigError, ShapeError
from zir.eval._frozen import frozen
from zir.scoring.accuracy import topk_accuracy
from zir.scoring.inputs import as_features, as_labels, same_width

__all__ = ["DEFAULT_TEMPLATES", "zeroshot_classifier", "evaluate_zeroshot"]

# A small generic ensemble; datasets with their own wording (e.g. "a photo of a {}, a type of pet.")
# should pass their own templates.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
    "a close-up photo of the {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
)

Template = str | Callable[[str], str]


def _fill(template: Template, name: str) -> str:
    """The prompt for class `name` from one template (a string with '{}' or a callable)."""
    if callable(template):
        text = template(name)
        if not isinstance(text, str):
            raise ConfigError(f"a callable template must return a string, got {type(text).__name__} for {name!r}")
        return text
    if not isinstance(template, str) or "{}" not in template:
        raise ConfigError(f"template {template!r} must be a string with a '{{}}' for the class name, or a callable")
    return template.replace("{}", name)


def zeroshot_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
) -> torch.Tensor:
    """The (C, D) matrix of unit-norm class embeddings, each the re-normalised mean of its normalised prompts.

    `encode_text` maps a list of T prompt strings to embeddings (T, D) (tokenising inside); it is called
    once per class without gradients, in eval mode when it is a module or a module's bound method.
    """
    if isinstance(class_names, str) or not class_names:
        raise ConfigError("class_names must be a non-empty list of strings")
    if isinstance(templates, str) or not templates:
        raise ConfigError("templates must be a non-empty list of templates")
    rows: list[torch.Tensor] = []
    with frozen(encode_text):
        for name in class_names:
            if not isinstance(name, str):
                raise ConfigError(f"class name {name!r} is not a string")
            prompts = [_fill(t, name) for t in templates]
            z = encode_text(prompts)
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != len(prompts):
                shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise ShapeError(f"encode_text must return ({len(prompts)}, D) for {len(prompts)} prompts, got {shape}")
            if rows and z.shape[1] != rows[0].shape[0]:
                raise ShapeError(f"encode_text gave width {z.shape[1]} for {name!r} but {rows[0].shape[0]} before")
            z = F.normalize(z.detach().to("cpu", torch.float32), dim=1)
            rows.append(F.normalize(z.mean(dim=0), dim=0))
    return torch.stack(rows)


def evaluate_zeroshot(image_features: Any, labels: Any, classifier: Any) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) of image features (N, D) against a (C, D) classifier; {"top1", "top5"}.

    `labels` (N,) are row indices into `classifier` (the order of the class names it was built from).
    """
    img = F.normalize(as_features(image_features, "image_features"), dim=1)
    weights = as_features(classifier, "classifier")
    same_width(img, weights, "image_features", "classifier")
    targets = as_labels(labels, img.shape[0], "labels")
    if targets.min() < 0 or targets.max() >= weights.shape[0]:
        lo, hi = int(targets.min()), int(targets.max())
        raise ShapeError(f"labels must index the {weights.shape[0]} classes, got values in [{lo}, {hi}]")
    acc = topk_accuracy(img @ weights.T, targets, (1, 5))
    return {"top1": acc[1], "top5": acc[5]}
