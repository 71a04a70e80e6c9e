"""Evaluate a training run: its newest checkpoint through zero-shot, retrieval, linear probe and k-NN.

`evaluate_run("runs/clip")` loads the run (`run_loading.py`), opens its evaluation data (`splits.py`),
scores its image tower (or, in a model without one or on recordings without images, its audio tower:
`scored_tower()`),
builds one `EvalContext` per model evaluated (the run's weights, and with `baseline=True` the same
architecture at its initial weights) and runs each requested task from the registry (`tasks.py`) on it;
the image tower's pooled features are extracted once per (weights, dataset, split) (`extractor.py`) into
`RUN/features/` and shared by the tasks. It writes `RUN/results.json`: one object per task with its
metrics, dataset, split and checkpoint step (a task met on several data sets also under `<task>@<dataset>`:
`results_file.py`). Tasks the model cannot do (zero-shot without a text tower)
are recorded as `{"skipped": reason}`. With `baseline=True` each task also carries `random_init`: the same
numbers at the initial weights, which is what a trained representation has to beat.

`finetune` (asked for by name, not in the default set) is the top-1 of the run's own classifier (the
`supervised` objective's head) on the held-out split. `teacher=True` evaluates the EMA teacher of a DINO or
iBOT run instead of the student tower; its results are stored as `<task>_teacher` with `tower` saying so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from zir.eval.extractor import FeatureExtractor
from zir.eval.run_loading import (  # noqa: F401  (the names eval, explain and the CLI import from here)
    EvalError, LoadedRun, image_size, image_text_objective, image_tower, load_run, random_init_model,
    run_tokenizer, scored_tower, supervised_objective, teacher_tower,
)
from zir.eval.splits import EvalData, data_modality, eval_data, extraction_plan
from zir.eval import av_retrieval  # noqa: F401  (registers the av_retrieval task)
from zir.eval.rerank import check_rerank
from zir.eval.results_file import merge_results, repeats_plain, task_of
from zir.eval.tasks import DEFAULT_TASKS, EVAL_TASKS, EvalContext, parse_tasks

__all__ = ["TASKS", "EvalError", "LoadedRun", "evaluate_run", "load_run", "random_init_model",
           "image_tower", "scored_tower", "teacher_tower", "image_size", "image_text_objective", "supervised_objective", "run_tokenizer",
           "eval_data", "results_rows", "results_table"]

TASKS = DEFAULT_TASKS  # the default set; every registered name (EVAL_TASKS) can be asked for


def _context(model: nn.Module, tag: str, data: EvalData, run_dir: Path, config: dict, limit, batch_size, tokenizer,
             probe_options: dict, teacher: bool, baseline: bool) -> EvalContext:
    """The context of one model's tasks: its image or audio tower (or that tower's EMA teacher) and its heads."""
    student = scored_tower(model, data_modality(data.test))
    tower = teacher_tower(model, student[0]) if teacher else student
    plan = extraction_plan(model, config, student[1])
    features = FeatureExtractor(tower, tag, run_dir / "features", data, plan, limit, batch_size, tokenizer)
    # heads (CLIP's projection, the classifier) were trained on the student's features, not the teacher's
    image_text = None if teacher else image_text_objective(model, student[0])
    classifier = None if teacher else supervised_objective(model, student[0])
    return EvalContext(model, data, features, tokenizer, image_text, classifier, limit, baseline, teacher,
                       probe_options, config, batch_size, run_dir=run_dir)


def _evaluate(ctx: EvalContext, tasks: Sequence[str]) -> dict[str, dict]:
    """Every task's entries for one model, keyed as results.json keys them (`<task>_<split>` beyond the test split)."""
    out: dict[str, dict] = {}
    for name in tasks:
        for split, entry in EVAL_TASKS[name](ctx).items():
            out[name if split == ctx.data.test_split else f"{name}_{split}"] = entry
    for entry in out.values():
        entry["tower"] = ctx.features.tower_name
    return out


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
    rerank: int = 0,
) -> dict[str, dict]:
    """Evaluate a run's newest weights on each task and write RUN/results.json; returns the task objects."""
    # `data` replaces the run's training source (`shapes`, `cifar10:test`, a path); `limit` caps the samples
    # per split; `baseline` adds each task's numbers at the initial weights under `random_init`;
    # `probe_options` go to `evaluate_linear_probe`. Tasks evaluated earlier and not asked for now stay.
    # `teacher` evaluates the DINO/iBOT EMA teacher; its results are keyed `<task>_teacher`.
    tasks = parse_tasks(tasks)
    if limit is not None and int(limit) < 2:
        raise EvalError(f"limit={limit}: expected at least 2 samples per split")
    run = load_run(run_dir, ema=ema)
    tokenizer = run.tokenizer
    source = eval_data(data, run.config, data_root, limit, data_options)
    if teacher:
        teacher_tower(run.model, scored_tower(run.model, data_modality(source.test))[0])  # a one-line error before any feature is extracted
    tag = f"step{run.step}" + ("-ema" if run.ema else "") + ("-teacher" if teacher else "")
    probe = dict(probe_options or {})
    ctx = _context(run.model, tag, source, run.run_dir, run.config, limit, batch_size, tokenizer, probe, teacher, False)
    ctx.rerank = check_rerank(rerank)  # retrieval also re-ranks each query's top `rerank` with an itm objective
    results = _evaluate(ctx, tasks)
    for entry in results.values():
        entry["step"] = run.step
    if baseline:
        seed = int((run.config.get("train") or {}).get("seed", 0) or 0)
        base = _evaluate(_context(random_init_model(run.config), f"init-seed{seed}", source, run.run_dir, run.config,
                                  limit, batch_size, tokenizer, probe, teacher, True), tasks)
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
        merged = merge_results(merged if isinstance(merged, dict) else {}, results)
        tmp = path.with_name("results.json.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)
    return results


def results_rows(results: dict[str, dict]) -> list[list[str]]:
    """Table rows (task, dataset/split, metric, trained, random init) for printing or the report."""
    headline = {"zeroshot": ("top1",), "linear": ("top1",), "knn": ("top1",), "finetune": ("top1",),
                "segment": ("mIoU", "object_IoU"), "retrieval": ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5",
                                                                    "a2t_R@1", "a2t_R@5", "t2a_R@1", "t2a_R@5"),
                "av_retrieval": ("a2i_R@1", "a2i_R@5", "i2a_R@1", "i2a_R@5")}
    rows = []
    for task, entry in results.items():
        if not isinstance(entry, dict) or repeats_plain(results, task):
            continue
        where = f"{entry.get('dataset', '?')}:{entry.get('split', '?')}"
        if "skipped" in entry:
            rows.append([task, where, "skipped", entry["skipped"], ""])
            continue
        base = entry.get("random_init") or {}
        plain_task = task_of(task)
        for metric in headline.get(plain_task, headline.get(plain_task.split("_")[0], ("top1",))):
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
