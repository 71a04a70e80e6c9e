"""Evaluation tasks by name: each a function of one `EvalContext` that returns its results, in `EVAL_TASKS`.

A task returns `{split: entry}`: its entry for the test split (saved in results.json under the task's
name) and one for any other split it scored (saved as `<task>_<split>`, as zero-shot does on shapes'
`comp`). An entry is a JSON-ready dict of metrics with `dataset` and `split`, or `{"skipped": reason, ...}`
when the model or the data cannot do the task. Add one with `register_task("name", function)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zir.eval.extractor import FeatureExtractor
from zir.eval.knn import evaluate_knn
from zir.eval.linear_probe import evaluate_linear_probe
from zir.eval.retrieval import evaluate_retrieval
from zir.eval.run_loading import EvalError
from zir.eval.splits import EvalData
from zir.eval.zeroshot import DEFAULT_TEMPLATES, evaluate_zeroshot, zeroshot_classifier
from zir.objectives.clip import ImageText
from zir.objectives.imagebind import JointSpace
from zir.objectives.supervised import Supervised

__all__ = ["DEFAULT_TASKS", "EVAL_TASKS", "EvalContext", "EvalTask", "parse_tasks", "register_task"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SHAPES_TEMPLATES = ("a {}", "a picture of a {}", "an image of a {}")  # the wording of shapes' own captions


@dataclass
class EvalContext:
    """What every task of one evaluation reads: one model's tower and heads, the data, the settings, and
    the tower's features, extracted once per split and shared (linear and k-NN read the same)."""

    model: nn.Module
    data: EvalData
    features: FeatureExtractor  # also names the tower evaluated (`features.tower_name`)
    tokenizer: Any  # the run's text tokenizer, or None
    image_text: ImageText | JointSpace | None  # what projects into the joint space; None for a teacher
    classifier: Supervised | None  # the run's classifier head (fine-tuning); None for a teacher
    limit: int | None = None
    baseline: bool = False  # True while the architecture at its initial weights is evaluated
    teacher: bool = False  # the tower is an EMA teacher, which the heads were not trained on
    probe_options: dict = field(default_factory=dict)  # keyword arguments of `evaluate_linear_probe`
    config: dict = field(default_factory=dict)  # the run's config (how its inputs were normalised)
    batch_size: int = 256  # of feature extraction
    rerank: int = 0  # retrieval re-ranks each query's top `rerank` by an `itm` objective's match scores (0: off)
    run_dir: Path | None = None  # where tasks keep what the report draws (the segmentation probe's masks)

    def where(self, split: str | None = None) -> dict:
        """The dataset and split an entry was scored on (the test split unless named)."""
        return {"dataset": self.data.name, "split": split or self.data.test_split}

    def skipped(self, reason: str) -> dict[str, dict]:
        """A task's result when it cannot run: the reason, on the test split."""
        return {self.data.test_split: {"skipped": reason, **self.where()}}

    def pooled(self, split: str, source) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D) pooled features and (N,) labels of one split, extracted at most once per evaluation."""
        return self.features.pooled(split, source)

    def text_reason(self) -> str | None:
        """Why the text tasks (zero-shot, retrieval) cannot run, or None when they can."""
        if self.teacher:
            return "the image-text projection was trained on the student's features, not the teacher's"
        if self.image_text is None:
            return "the model has no text tower with a contrastive objective (clip, siglip, slip, coca, imagebind)"
        if self.tokenizer is None:
            return "the run saved no tokenizer (RUN/tokenizer.json or data.tokenizer)"
        return None


EvalTask = Callable[[EvalContext], dict[str, dict]]
EVAL_TASKS: dict[str, EvalTask] = {}
DEFAULT_TASKS = ("zeroshot", "retrieval", "linear", "knn")  # what `zir eval` runs unless told; others when named


def register_task(name: str, task: EvalTask, *, replace: bool = False) -> EvalTask:
    """Make `task` evaluable as `name` (`zir eval --tasks name`); returns it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"evaluation task name {name!r}: expected letters, digits, _ and - (starting with a letter)")
    if not callable(task):
        raise TypeError(f"evaluation task {name!r}: expected a function of an EvalContext, got {type(task).__name__}")
    if not replace and EVAL_TASKS.get(name, task) is not task:
        raise ValueError(f"evaluation task {name!r} is already registered; pass replace=True to replace it")
    EVAL_TASKS[name] = task
    return task


def _labelled(labels) -> bool:
    return labels is not None and len(labels) > 0 and bool((labels >= 0).all())


def _fitted(ctx: EvalContext, protocol: Callable) -> dict[str, dict]:
    """A protocol fitted on the fit split's features and scored on the test split's (linear probe, k-NN)."""
    data = ctx.data
    if data.fit is None:
        return ctx.skipped(f"{data.name} has no training split to fit on")
    train_x, train_y = ctx.pooled(data.fit_split, data.fit)
    test_x, test_y = ctx.pooled(data.test_split, data.test)
    if not (_labelled(train_y) and _labelled(test_y)):
        return ctx.skipped(f"{data.name} has no class labels")
    res = protocol(train_x, train_y, test_x, test_y)
    return {data.test_split: {**res, **ctx.where(), "train_split": data.fit_split, "n_train": len(train_y),
                              "n_test": len(test_y)}}


def linear(ctx: EvalContext) -> dict[str, dict]:
    """Logistic regression on frozen pooled features (its C swept on a held-out part of the fit split)."""
    return _fitted(ctx, lambda *xy: evaluate_linear_probe(*xy, **ctx.probe_options))


def knn(ctx: EvalContext) -> dict[str, dict]:
    """Weighted k-NN (k = 20, or every fit sample when fewer) on frozen pooled features."""
    return _fitted(ctx, lambda tx, ty, vx, vy: evaluate_knn(tx, ty, vx, vy, k=min(20, len(ty))))


def zeroshot(ctx: EvalContext) -> dict[str, dict]:
    """Top-1/top-5 of class-name prompts in the joint space, on the test split and the data's extra splits; the
    prompts are the source's own (`Source.zeroshot_templates`: spoken-word prompts for fsdd) when it has them."""
    data = ctx.data
    classes = list(data.test.classes or [])
    reason = ctx.text_reason()
    if reason or not classes:
        return ctx.skipped(reason or f"{data.name} has no class names")
    templates = data.test.zeroshot_templates or (SHAPES_TEMPLATES if data.name == "shapes" else DEFAULT_TEMPLATES)
    classifier = zeroshot_classifier(ctx.image_text.text_encoder(ctx.tokenizer), classes, templates)
    out = {}
    for split, source in [(data.test_split, data.test), *data.extra.items()]:
        x, y = ctx.pooled(split, source)
        if not _labelled(y):
            out[split] = {"skipped": f"{data.name}:{split} has no class labels", **ctx.where(split)}
            continue
        res = evaluate_zeroshot(ctx.image_text.project_image(x), y, classifier)
        out[split] = {**res, **ctx.where(split), "classes": len(classes), "n_test": len(y)}
    return out


def retrieval(ctx: EvalContext) -> dict[str, dict]:
    """Image->text and text->image recall@K on the test split's images and their captions (exact pairs); for an
    audio tower, audio->text and text->audio (same-class hits, `zir.eval.audio_text_retrieval`)."""
    if ctx.features.tower.modality == "audio":
        from zir.eval.audio_text_retrieval import audio_text_retrieval

        return audio_text_retrieval(ctx)
    data = ctx.data
    reason = ctx.text_reason()
    if reason or not data.test.has_captions:
        return ctx.skipped(reason or f"{data.name} has no captions")
    x, _ = ctx.pooled(data.test_split, data.test)
    texts = ctx.features.captions(data.test_split, data.test, ctx.image_text.encode_text)
    per = texts.shape[0] // x.shape[0]
    owner = torch.arange(x.shape[0]).repeat_interleave(per)
    image = ctx.image_text.project_image(x)
    res = evaluate_retrieval(image, texts, owner)
    if ctx.rerank and not ctx.baseline:
        from zir.eval.rerank import reranked_retrieval

        res.update(reranked_retrieval(ctx, image, texts, owner))
    return {data.test_split: {**res, **ctx.where(), "n_images": int(x.shape[0]), "n_captions": int(texts.shape[0])}}


def finetune(ctx: EvalContext) -> dict[str, dict]:
    """Top-1 of the run's own classifier head (its `supervised` objective) on the test split."""
    data, head = ctx.data, ctx.classifier
    classes = len(data.test.classes or [])
    if head is None:
        return ctx.skipped("the classifier head was trained on the student's features" if ctx.teacher else
                           "the model has no supervised objective (a classifier head); fine-tune one with zir train finetune")
    if classes and classes != head.num_classes:
        return ctx.skipped(f"{data.name} has {classes} classes, the head {head.num_classes}")
    x, y = ctx.pooled(data.test_split, data.test)
    if not _labelled(y):
        return ctx.skipped(f"{data.name} has no class labels")
    with torch.no_grad():
        logits = head.classify(x)
    top1 = 100.0 * float((logits.argmax(dim=-1) == y).float().mean())
    return {data.test_split: {"top1": top1, **ctx.where(), "objective": head.name, "classes": head.num_classes,
                              "n_test": len(y)}}


def _pixel_masks(source) -> torch.Tensor | None:
    """(N, H, W) class per pixel of a source's images (shapes: 0 background, 1 + shape), or None without masks."""
    from zir.data.builtin import ShapesSource
    from zir.data.held_out import Subset

    if isinstance(source, Subset) and isinstance(source.inner, ShapesSource):
        return torch.from_numpy(source.inner.pixel_masks("shape", source.indices))
    if isinstance(source, ShapesSource):
        return torch.from_numpy(source.pixel_masks("shape"))
    return None


def _source_images(source, count: int):
    """(count, H, W, 3) uint8 first images of a shapes source (or a subset of one), as painted."""
    from zir.data.held_out import Subset

    if isinstance(source, Subset):
        return source.inner.data.images[source.indices[:count]]
    return source.data.images[:count]


def segment(ctx: EvalContext) -> dict[str, dict]:
    """mIoU of a linear probe on frozen patch tokens, upsampled to pixels, against shapes' per-pixel shape masks,
    and of the shape-agnostic one (object against background, `object_*`); the trained tower's first test masks
    go to RUN/segment_masks.npz for the report."""
    from zir.data.shape_masks import mask_classes
    from zir.eval.segment import evaluate_objectness, evaluate_segmentation
    from zir.eval.segment_pictures import EXAMPLES, MASKS_FILE, save_segment_masks

    data, tower = ctx.data, ctx.features.tower
    if tower.modality != "image" or tower.feature_stride is None:
        return ctx.skipped(f"the {tower.modality} tower has no image patch grid")
    if data.fit is None:
        return ctx.skipped(f"{data.name} has no training split to fit on")
    fit_masks, test_masks = _pixel_masks(data.fit), _pixel_masks(data.test)
    if fit_masks is None or test_masks is None:
        return ctx.skipped(f"{data.name} has no per-pixel masks (shapes has them)")
    train = ctx.features.token_maps(data.fit_split, data.fit)
    test = ctx.features.token_maps(data.test_split, data.test)
    fit_masks, test_masks = fit_masks[:len(train)], test_masks[:len(test)]
    side = tuple(int(s * n) for s, n in zip(tower.feature_stride, test.shape[-2:]))  # the pixels the tower read
    if tuple(test_masks.shape[-2:]) != side:  # the images were resized for the tower: the masks follow
        fit_masks, test_masks = (F.interpolate(m[:, None].float(), size=side, mode="nearest")[:, 0].long()
                                 for m in (fit_masks, test_masks))
    keep = EXAMPLES if ctx.run_dir is not None and not (ctx.baseline or ctx.teacher) else 0
    res = evaluate_segmentation(train, fit_masks, test, test_masks, mask_classes("shape"), keep=keep)
    res.update(evaluate_objectness(train, fit_masks, test, test_masks))
    if keep:
        pred = res.pop("predictions")
        save_segment_masks(ctx.run_dir / MASKS_FILE, _source_images(data.test, len(pred)), test_masks[:len(pred)],
                           pred, mask_classes("shape"))
    return {data.test_split: {**res, **ctx.where(), "train_split": data.fit_split, "n_train": len(train),
                              "n_test": len(test), "masks": "shape"}}


register_task("zeroshot", zeroshot)
register_task("retrieval", retrieval)
register_task("linear", linear)
register_task("knn", knn)
register_task("finetune", finetune)
register_task("segment", segment)


def parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Registered task names from a comma-separated string or a sequence, in the order given, once each."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(dict.fromkeys(tasks))
    known = ", ".join(EVAL_TASKS)
    if not tasks:
        raise EvalError(f"no tasks given; expected some of {known}")
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise EvalError(f"unknown task {unknown[0]!r}; expected some of {known}")
    return tasks
