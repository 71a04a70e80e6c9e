"""The evaluation task registry: a registered task runs through `evaluate_run` on one shared `EvalContext`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import zir.eval.extractor as extractor
import zir.eval.tasks as tasks
from zir.eval.run_eval import EvalError, evaluate_run, random_init_model
from zir.eval.tasks import DEFAULT_TASKS, EVAL_TASKS, EvalContext, register_task
from zir.train import save_checkpoint

LIMIT = 24
RECIPE = {"name": "tiny", "train": {"steps": 1},
          "model": {"towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16}},
                    "objectives": {"supervised": {"num_classes": 5}}},
          "data": {"source": "shapes", "batch_size": 8, "options": {"n": 32, "size": 16, "objects": [1, 1], "label": "shape"}}}


@pytest.fixture()
def run(tmp_path):
    """A fine-tuning run folder written directly: config.yaml and one checkpoint of the seeded model."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(RECIPE))
    save_checkpoint(folder / "checkpoints", 0, random_init_model(RECIPE).state_dict(), {"step": 0})
    return folder


def mean_norm(ctx: EvalContext) -> dict[str, dict]:
    """A task of this test: the mean feature norm of the test split, and whether it ran on the random init."""
    x, _ = ctx.pooled(ctx.data.test_split, ctx.data.test)
    return {ctx.data.test_split: {"top1": float(x.norm(dim=-1).mean()), "baseline": int(ctx.baseline), **ctx.where()}}


def test_a_registered_task_runs_by_name_and_lands_in_results_json(run, monkeypatch):
    monkeypatch.setitem(EVAL_TASKS, "norm", mean_norm)
    with pytest.raises(EvalError, match=r"unknown task 'nope'; expected some of zeroshot, retrieval, linear, knn, "
                                        r"finetune, segment, av_retrieval, norm$"):
        evaluate_run(run, "norm,nope")
    out = evaluate_run(run, "norm", limit=LIMIT, baseline=True)
    saved = json.loads((run / "results.json").read_text())
    assert saved == out and set(saved) == {"norm"}
    entry = saved["norm"]
    assert entry["dataset"] == "shapes" and entry["split"] == "test" and entry["tower"] == "image" and entry["step"] == 0
    assert entry["baseline"] == 0 and entry["random_init"]["baseline"] == 1  # the context says which model it holds
    assert entry["top1"] > 0 and entry["random_init"]["top1"] == pytest.approx(entry["top1"])  # step 0: same weights


def test_tasks_of_one_evaluation_share_one_feature_extraction_per_split(run, monkeypatch):
    calls = []
    real = extractor.extract_features

    def counted(encode, batches, cache_dir=None, key=None):
        calls.append(key.split("-")[2])  # tag-dataset-split-kind-hash
        return real(encode, batches, cache_dir=cache_dir, key=key)

    monkeypatch.setattr(extractor, "extract_features", counted)
    monkeypatch.setitem(EVAL_TASKS, "norm", mean_norm)
    out = evaluate_run(run, "linear,knn,finetune,norm", limit=LIMIT, probe_options={"Cs": (1.0,), "max_iter": 50})
    assert sorted(calls) == ["test", "train"]
    assert all("skipped" not in e for e in out.values()) and out["knn"]["n_train"] == LIMIT


def test_register_task_refuses_bad_names_and_silent_replacement(monkeypatch):
    monkeypatch.setattr(tasks, "EVAL_TASKS", dict(EVAL_TASKS))  # the real registry stays as it is
    with pytest.raises(ValueError, match="already registered"):
        register_task("knn", mean_norm)
    assert register_task("knn", mean_norm, replace=True) is mean_norm and tasks.EVAL_TASKS["knn"] is mean_norm
    for bad in ("a,b", "", "2nd", None):
        with pytest.raises(ValueError, match="task name"):
            register_task(bad, mean_norm)
    with pytest.raises(TypeError, match="function of an EvalContext"):
        register_task("oops", "not a function")
    assert set(DEFAULT_TASKS) < set(EVAL_TASKS) and "finetune" not in DEFAULT_TASKS


def test_the_default_tasks_are_the_four_protocols_and_skip_what_the_model_lacks(run):
    out = evaluate_run(run, limit=LIMIT, probe_options={"Cs": (1.0,), "max_iter": 50})
    assert list(out) == ["zeroshot", "retrieval", "linear", "knn"]
    assert "text tower" in out["zeroshot"]["skipped"] and "text tower" in out["retrieval"]["skipped"]
    assert torch.isfinite(torch.tensor([out["linear"]["top1"], out["knn"]["top1"]])).all()
