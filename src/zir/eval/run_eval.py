"""Evaluate a training run: its newest checkpoint through zero-shot, retrieval, linear probe and k-NN.

`evaluate_run("runs/clip")` rebuilds the run's ZirModel, extracts the image tower's pooled features once
per (dataset, split) into `RUN/features/`, runs every requested task the model supports, and writes
`RUN/results.json`: one object per task with its metrics, dataset, split and checkpoint step. Tasks the
model cannot do (zero-shot without a text tower) are recorded as `{"skipped": reason}`. With
`baseline=True` each task also carries `random_init`: the same numbers for the same architecture at its
initial weights, which is what a trained representation has to beat.

`finetune` (asked for by name, not in the default set) is the top-1 of the run's own classifier (the
`supervised` objective's head) on the held-out split. `teacher=True` evaluates the EMA teacher of a DINO or
iBOT run instead of the student tower; its results are stored as `<task>_teacher` with `tower` saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zir.data.sources import MapSource
from zir.eval.features import extract_features
from zir.eval.knn import evaluate_knn
from zir.eval.linear_probe import evaluate_linear_probe
from zir.eval.retrieval import evaluate_retrieval
from zir.eval.run_loading import (  # noqa: F401  (the names eval, explain and the CLI import from here)
    EvalError, LoadedRun, image_size, image_text_objective, image_tower, load_run, random_init_model,
    run_tokenizer, supervised_objective, teacher_tower,
)
from zir.eval.zeroshot import DEFAULT_TEMPLATES, evaluate_zeroshot, zeroshot_classifier

__all__ = ["TASKS", "EXTRA_TASKS", "EvalError", "LoadedRun", "evaluate_run", "load_run", "random_init_model",
           "image_tower", "teacher_tower", "image_size", "image_text_objective", "supervised_objective", "run_tokenizer",
           "eval_data", "results_rows", "results_table"]

TASKS = ("zeroshot", "retrieval", "linear", "knn")  # the default set
EXTRA_TASKS = ("finetune",)  # run when named: the fine-tuned run's own classifier head
BUILTIN_SPLITS = {"shapes": "test", "digits": "test", "cifar10": "test", "flickr8k": "test", "fashion_mnist": "test"}
CAPTIONS_PER_IMAGE = 5  # Flickr and shapes both have five; retrieval reads this many per image
SHAPES_TEMPLATES = ("a {}", "a picture of a {}", "an image of a {}")  # the wording of shapes' own captions


# -- data -------------------------------------------------------------------------------------------

def _plan_stats(model: nn.Module, config: dict) -> tuple[tuple, tuple]:
    """(mean, std) the run normalised its images with (the model's plan with the recipe's overrides)."""
    over = (config.get("data") or {}).get("plan") or {}
    try:
        plan = model.view_plan()
        mean, std = tuple(plan.mean), tuple(plan.std)
    except Exception:  # noqa: BLE001 - a custom model without a plan: the data defaults
        from zir.data import transforms

        mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
    return tuple(over.get("mean", mean)), tuple(over.get("std", std))


@dataclass
class EvalData:
    """Where each task reads: the fit split (linear, k-NN), the test split, and extra zero-shot splits."""

    name: str
    fit: Any  # a Source, or None when the data has no training split
    fit_split: str
    test: Any
    test_split: str
    extra: dict  # split name -> Source, zero-shot only (shapes: comp)
    options: dict


class _Subset(MapSource):
    """A map-style source restricted to some indices (a limit, or a hold-out of a source with no splits)."""

    def __init__(self, source: MapSource, indices) -> None:
        """The samples of `source` at `indices`, in that order."""
        self.inner, self.indices = source, [int(i) for i in indices]
        self.name, self.classes = source.name, source.classes
        self.has_captions, self.image_size = source.has_captions, source.image_size

    def __len__(self) -> int:
        """Number of samples kept."""
        return len(self.indices)

    def get(self, index: int):
        """The kept sample at `index`."""
        return self.inner.get(self.indices[index])


def _limit(source, limit: int | None):
    """The first `limit` samples of a map-style source (streams are cut while reading)."""
    if limit is None or not isinstance(source, MapSource) or len(source) <= limit:
        return source
    return _Subset(source, range(limit))


def eval_data(data: str | None, config: dict, data_root=None, limit: int | None = None, options: dict | None = None) -> EvalData:
    """The sources of an evaluation: the run's training source (or `data`), its train and held-out splits."""
    from zir.data import open_source

    dcfg = config.get("data") or {}
    spec = str(data or dcfg.get("source") or "shapes")
    opts = dict(options if options is not None else ({} if data else dcfg.get("options") or {}))
    opts.pop("n", None)  # the run's training-set size; evaluation reads whole splits (cut by `limit`)
    root = data_root if data_root is not None else dcfg.get("data_root")
    prefix, sep, rest = spec.partition(":")
    name = prefix.lower()
    if name in BUILTIN_SPLITS and not os.path.exists(spec):
        test_split = rest if sep and rest else BUILTIN_SPLITS[name]
        fit = _limit(open_source(name, split="train", data_root=root, **opts), limit)
        test = _limit(open_source(name, split=test_split, data_root=root, **opts), limit)
        extra = {"comp": _limit(open_source(name, split="comp", data_root=root, **opts), limit)} if name == "shapes" else {}
        return EvalData(name, fit, "train", test, test_split, extra, opts)
    source = open_source(spec, data_root=root, **opts)
    if isinstance(source, MapSource):  # one source, no splits: a fixed 80/20 hold-out
        order = np.random.default_rng(0).permutation(len(source))
        cut = int(round(0.8 * len(order)))
        fit, test = _Subset(source, sorted(order[:cut])), _Subset(source, sorted(order[cut:]))
        return EvalData(spec, _limit(fit, limit), "80%", _limit(test, limit), "20%", {}, opts)
    return EvalData(spec, None, "", source, "all", {}, opts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-")[:40] or "data"


# -- features ---------------------------------------------------------------------------------------

class _Extractor:
    """Pooled image features and caption embeddings of one model, cached in RUN/features/ per split."""

    def __init__(self, model, tag: str, cache_dir: Path, data: EvalData, mean, std, limit, batch_size, tokenizer,
                 tower: tuple[str, nn.Module] | None = None):
        self.model, self.tag, self.cache_dir, self.data = model, tag, cache_dir, data
        self.tower_name, self.tower = tower or image_tower(model)
        self.size = image_size(self.tower)
        self.mean, self.std, self.limit, self.batch_size, self.tokenizer = mean, std, limit, batch_size, tokenizer
        digest = json.dumps({"data": data.name, "opts": data.options, "limit": limit, "size": self.size, "mean": list(mean),
                             "std": list(std)}, sort_keys=True, default=str)
        self.hash = hashlib.sha1(digest.encode()).hexdigest()[:8]

    def key(self, split: str, kind: str) -> str:
        """The cache key of one split's features: weights tag, dataset, split, kind and a hash of the rest."""
        return f"{self.tag}-{_slug(self.data.name)}-{_slug(split)}-{kind}-{self.hash}"

    def _batches(self, source, text: bool = False) -> Iterator:
        from zir.data import make_loader

        plan = {"global": 1, "pipeline": "none", "size": self.size, "mean": self.mean, "std": self.std}
        if text:
            plan["text"] = CAPTIONS_PER_IMAGE
        loader = make_loader(source, plan, self.batch_size, shuffle=False, drop_last=False,
                             tokenizer=self.tokenizer if text else None)
        seen = 0
        for batch in loader:
            if self.limit is not None and seen >= self.limit:
                return
            take = len(batch) if self.limit is None else min(len(batch), self.limit - seen)
            seen += take
            if text:  # (B, T, L) -> (B * T, L): caption j describes image j // T
                ids = torch.stack([batch.tokens[f"text_{t}"] for t in range(CAPTIONS_PER_IMAGE)], dim=1)
                yield ids[:take].reshape(-1, ids.shape[-1])
            else:
                yield batch.views["global_0"][:take], batch.labels[:take]

    def pooled(self, source, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D) pooled image-tower features and (N,) labels (-1 where unknown) of one split."""
        tower = self.tower

        def encode(x: torch.Tensor) -> torch.Tensor:
            return tower.pool(tower.forward_tokens(x))

        with torch.no_grad():
            return extract_features(encode, self._batches(source), cache_dir=self.cache_dir, key=self.key(split, "pooled"))

    def captions(self, source, split: str, obj) -> torch.Tensor:
        """(N * 5, E) unit-norm caption embeddings of one split in the joint space of `obj`."""
        with torch.no_grad():
            feats, _ = extract_features(obj.encode_text, self._batches(source, text=True), cache_dir=self.cache_dir,
                                        key=self.key(split, "captions"))
        return feats


def _joint_images(obj, pooled: torch.Tensor) -> torch.Tensor:
    """Unit-norm (N, E) joint-space image embeddings from pooled features (the objective's projection)."""
    with torch.no_grad():
        return F.normalize(obj.image_proj(pooled.to(obj.image_proj.weight.dtype)), dim=-1)


# -- tasks ------------------------------------------------------------------------------------------

def _labelled(labels) -> bool:
    return labels is not None and len(labels) > 0 and bool((labels >= 0).all())


def _probe(train_x, train_y, test_x, test_y, options: dict) -> dict:
    """The linear probe (which limits itself to one BLAS thread)."""
    return evaluate_linear_probe(train_x, train_y, test_x, test_y, **options)


def _templates(data: EvalData) -> Sequence[str]:
    return SHAPES_TEMPLATES if data.name == "shapes" else DEFAULT_TEMPLATES


def _evaluate_model(model, tag: str, tasks: Sequence[str], data: EvalData, run_dir: Path, config: dict,
                    limit, batch_size, tokenizer, probe_options: dict, teacher: bool = False) -> dict[str, dict]:
    """Every task's metrics (or skip reason) for one model (its image tower, or that tower's EMA teacher)."""
    mean, std = _plan_stats(model, config)
    student = image_tower(model)
    tower = teacher_tower(model, student[0]) if teacher else student
    ex = _Extractor(model, tag, run_dir / "features", data, mean, std, limit, batch_size, tokenizer, tower)
    # heads (CLIP's projection, the classifier) were trained on the student's features, not the teacher's
    obj = None if teacher else image_text_objective(model, student[0])
    head = None if teacher else supervised_objective(model, student[0])
    cross_reason = None
    if teacher:
        cross_reason = "the image-text projection was trained on the student's features, not the teacher's"
    elif obj is None:
        cross_reason = "the model has no text tower with a contrastive objective (clip, siglip, slip, coca)"
    elif tokenizer is None:
        cross_reason = "the run saved no tokenizer (RUN/tokenizer.json or data.tokenizer)"
    feats: dict[str, tuple] = {}

    def pooled(split: str, source):
        if split not in feats:
            feats[split] = ex.pooled(source, split)
        return feats[split]

    out: dict[str, dict] = {}
    for task in tasks:
        where = {"dataset": data.name, "split": data.test_split}
        if task in ("linear", "knn"):
            if data.fit is None:
                out[task] = {"skipped": f"{data.name} has no training split to fit on", **where}
                continue
            train_x, train_y = pooled(data.fit_split, data.fit)
            test_x, test_y = pooled(data.test_split, data.test)
            if not (_labelled(train_y) and _labelled(test_y)):
                out[task] = {"skipped": f"{data.name} has no class labels", **where}
                continue
            if task == "knn":
                res = evaluate_knn(train_x, train_y, test_x, test_y, k=min(20, len(train_y)))
            else:
                res = _probe(train_x, train_y, test_x, test_y, probe_options)
            out[task] = {**res, **where, "train_split": data.fit_split, "n_train": len(train_y), "n_test": len(test_y)}
        elif task == "zeroshot":
            classes = list(getattr(data.test, "classes", None) or [])
            if cross_reason or not classes:
                out[task] = {"skipped": cross_reason or f"{data.name} has no class names", **where}
                continue
            classifier = zeroshot_classifier(obj.text_encoder(tokenizer), classes, _templates(data))
            for split, source in [(data.test_split, data.test), *data.extra.items()]:
                x, y = pooled(split, source)
                key = task if split == data.test_split else f"{task}_{split}"
                if not _labelled(y):
                    out[key] = {"skipped": f"{data.name}:{split} has no class labels", "dataset": data.name, "split": split}
                    continue
                res = evaluate_zeroshot(_joint_images(obj, x), y, classifier)
                out[key] = {**res, "dataset": data.name, "split": split, "classes": len(classes), "n_test": len(y)}
        elif task == "retrieval":
            if cross_reason or not getattr(data.test, "has_captions", False):
                out[task] = {"skipped": cross_reason or f"{data.name} has no captions", **where}
                continue
            x, _ = pooled(data.test_split, data.test)
            texts = ex.captions(data.test, data.test_split, obj)
            per = texts.shape[0] // x.shape[0]
            res = evaluate_retrieval(_joint_images(obj, x), texts, torch.arange(x.shape[0]).repeat_interleave(per))
            out[task] = {**res, **where, "n_images": int(x.shape[0]), "n_captions": int(texts.shape[0])}
        elif task == "finetune":
            classes = len(getattr(data.test, "classes", None) or [])
            reason = None
            if head is None:
                reason = ("the classifier head was trained on the student's features" if teacher else
                          "the model has no supervised objective (a classifier head); fine-tune one with zir train finetune")
            elif classes and classes != head.num_classes:
                reason = f"{data.name} has {classes} classes, the head {head.num_classes}"
            x, y = pooled(data.test_split, data.test) if reason is None else (None, None)
            if reason is None and not _labelled(y):
                reason = f"{data.name} has no class labels"
            if reason:
                out[task] = {"skipped": reason, **where}
                continue
            with torch.no_grad():
                logits = head.head(x.to(head.head.fc.weight.dtype))
            top1 = 100.0 * float((logits.argmax(dim=-1) == y).float().mean())
            out[task] = {"top1": top1, **where, "objective": head.name, "classes": head.num_classes, "n_test": len(y)}
    for entry in out.values():
        entry["tower"] = ex.tower_name
    return out


def _parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Validated task names, in the order given."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(dict.fromkeys(tasks))
    if not tasks:
        raise EvalError(f"no tasks given; expected some of {', '.join(TASKS + EXTRA_TASKS)}")
    unknown = [t for t in tasks if t not in TASKS + EXTRA_TASKS]
    if unknown:
        raise EvalError(f"unknown task {unknown[0]!r}; expected some of {', '.join(TASKS + EXTRA_TASKS)}")
    return tasks


def evaluate_run(
    run_dir: str | os.PathLike,
    tasks: str | Sequence[str] = TASKS,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    baseline: bool = False,
    data_options: dict | None = None,
    ema: bool = False,
    batch_size: int = 256,
    probe_options: dict | None = None,
    write: bool = True,
    teacher: bool = False,
) -> dict[str, dict]:
    """Evaluate a run's newest weights on each task and write RUN/results.json; returns the task objects."""
    # `data` replaces the run's training source (`shapes`, `cifar10:test`, a path); `limit` caps the samples
    # per split; `baseline` adds each task's numbers at the initial weights under `random_init`;
    # `probe_options` go to `evaluate_linear_probe`. Tasks evaluated earlier and not asked for now stay.
    # `teacher` evaluates the DINO/iBOT EMA teacher; its results are keyed `<task>_teacher`.
    tasks = _parse_tasks(tasks)
    if limit is not None and int(limit) < 2:
        raise EvalError(f"limit={limit}: expected at least 2 samples per split")
    run = load_run(run_dir, ema=ema)
    tokenizer = run_tokenizer(run.run_dir, run.config, run.model)
    source = eval_data(data, run.config, data_root, limit, data_options)
    if teacher:
        teacher_tower(run.model, image_tower(run.model)[0])  # a one-line error before any feature is extracted
    tag = f"step{run.step}" + ("-ema" if run.ema else "") + ("-teacher" if teacher else "")
    probe = dict(probe_options or {})
    results = _evaluate_model(run.model, tag, tasks, source, run.run_dir, run.config, limit, batch_size, tokenizer, probe,
                              teacher)
    for entry in results.values():
        entry["step"] = run.step
    if baseline:
        seed = int((run.config.get("train") or {}).get("seed", 0) or 0)
        base = _evaluate_model(random_init_model(run.config), f"init-seed{seed}", tasks, source, run.run_dir,
                               run.config, limit, batch_size, tokenizer, probe, teacher)
        for key, entry in base.items():
            if key in results and "skipped" not in entry:
                results[key]["random_init"] = {k: v for k, v in entry.items() if isinstance(v, (int, float))
                                               and k not in ("n_train", "n_test", "n_images", "n_captions", "classes")}
    if teacher:
        results = {f"{task}_teacher": entry for task, entry in results.items()}
    if write:
        path = run.run_dir / "results.json"
        merged: dict = {}
        if path.is_file():
            try:
                merged = json.loads(path.read_text())
            except ValueError:
                merged = {}
        merged = merged if isinstance(merged, dict) else {}
        merged.update(results)
        tmp = path.with_name("results.json.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)
    return results


def results_rows(results: dict[str, dict]) -> list[list[str]]:
    """Table rows (task, dataset/split, metric, trained, random init) for printing or the report."""
    headline = {"zeroshot": ("top1",), "linear": ("top1",), "knn": ("top1",), "finetune": ("top1",),
                "retrieval": ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5")}
    rows = []
    for task, entry in results.items():
        if not isinstance(entry, dict):
            continue
        where = f"{entry.get('dataset', '?')}:{entry.get('split', '?')}"
        if "skipped" in entry:
            rows.append([task, where, "skipped", entry["skipped"], ""])
            continue
        base = entry.get("random_init") or {}
        for metric in headline.get(task.split("_")[0], ("top1",)):
            if metric in entry:
                rows.append([task, where, metric, f"{entry[metric]:.1f}",
                             f"{base[metric]:.1f}" if metric in base else "-"])
    return rows


def results_table(results: dict[str, dict], title: str = "Evaluation"):
    """A printable `TextTable` of `results_rows` (call `.print()`), as `zir eval` and the demo show it."""
    from zir.report_tables import TextTable

    baseline = any(isinstance(e, dict) and "random_init" in e for e in results.values())
    table = TextTable(title=title, columns=["task", "data", "metric", "trained", "random init"])
    table.rows = results_rows(results)
    table.caption = "accuracies and recalls in percent" + ("" if baseline else "; --baseline adds random init")
    return table
