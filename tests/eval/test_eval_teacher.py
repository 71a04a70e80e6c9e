"""`zir eval --teacher`: the DINO EMA teacher is evaluated instead of the student, and results.json says so;
`--tasks finetune` reads a fine-tuned run's own classifier head."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from zir.cli import main
from zir.eval.run_eval import EvalError, evaluate_run, random_init_model
from zir.train import save_checkpoint

LIMIT = 32
TOWER = {"model": "vit_nano_patch4_32", "img_size": 16}
DATA = {"source": "shapes", "batch_size": 8, "options": {"n": 32, "size": 16, "objects": [1, 1], "label": "shape"}}


def write_run(folder, objectives: dict, edit=None):
    """A run folder written directly: config.yaml and one checkpoint of the seeded model, after `edit(model)`."""
    raw = {"name": "tiny", "model": {"towers": {"image": dict(TOWER)}, "objectives": objectives}, "data": DATA,
           "train": {"steps": 1}}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    model = random_init_model(raw)
    if edit is not None:
        edit(model)
    save_checkpoint(folder / "checkpoints", 0, model.state_dict(), {"step": 0})
    return model


def test_teacher_features_are_the_teachers_not_the_students(tmp_path):
    def drift(model):  # as after EMA training, the teacher is no longer a copy of the student
        with torch.no_grad():
            for p in model.teachers["image_teacher"].module.parameters():
                p.mul_(0.5).add_(0.01)

    dino = write_run(tmp_path / "dino", {"dino": {"out_dim": 64, "local_views": 0}}, drift)
    # a second run whose *student* tower holds the DINO teacher's weights: what the teacher must give
    teacher_state = dino.teachers["image_teacher"].module.state_dict()
    write_run(tmp_path / "copy", {"mae": {}}, lambda m: m.towers["image"].load_state_dict(teacher_state))

    teacher = evaluate_run(tmp_path / "dino", "knn", limit=LIMIT, teacher=True)
    student = evaluate_run(tmp_path / "dino", "knn", limit=LIMIT)
    evaluate_run(tmp_path / "copy", "knn", limit=LIMIT)
    assert set(teacher) == {"knn_teacher"} and teacher["knn_teacher"]["tower"] == "image_teacher"
    assert student["knn"]["tower"] == "image"
    saved = json.loads((tmp_path / "dino" / "results.json").read_text())
    assert set(saved) == {"knn", "knn_teacher"} and saved["knn_teacher"]["tower"] == "image_teacher"

    def features(run, tag):
        [path] = (run / "features").glob(f"{tag}-shapes-test-pooled-*.safetensors")
        return load_file(str(path))["features"]

    t, s = features(tmp_path / "dino", "step0-teacher"), features(tmp_path / "dino", "step0")
    expected = features(tmp_path / "copy", "step0")
    assert t.shape == s.shape == (LIMIT, 64)
    assert torch.allclose(t, expected, atol=1e-6)
    assert (t - s).abs().max() > 0.1


def test_teacher_on_a_run_without_one_is_a_one_line_error(tmp_path, capsys):
    write_run(tmp_path / "mae", {"mae": {}})
    with pytest.raises(EvalError, match="no EMA teacher of its image tower") as err:
        evaluate_run(tmp_path / "mae", "knn", limit=LIMIT, teacher=True)
    assert "\n" not in str(err.value)
    assert main(["eval", str(tmp_path / "mae"), "--tasks", "knn", "--teacher", "--no-report"]) != 0
    assert "no EMA teacher" in capsys.readouterr().err
    assert not (tmp_path / "mae" / "features").exists()


def test_finetune_task_reads_the_runs_classifier_head(tmp_path):
    def perfect_on_class_two(model):  # a head that always says class 2 (triangle)
        fc = model.objectives["supervised"].head.fc
        with torch.no_grad():
            fc.weight.zero_()
            fc.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))

    write_run(tmp_path / "ft", {"supervised": {"num_classes": 5}}, perfect_on_class_two)
    out = evaluate_run(tmp_path / "ft", "finetune,knn", limit=LIMIT)
    from zir.data import ShapesSource

    labels = ShapesSource("test", n=LIMIT, size=16, objects=(1, 1), label="shape").labels()[:LIMIT]
    assert out["finetune"]["top1"] == pytest.approx(100.0 * float((labels == 2).mean()))
    assert out["finetune"]["classes"] == 5 and out["finetune"]["n_test"] == LIMIT and "top1" in out["knn"]
    write_run(tmp_path / "mae", {"mae": {}})
    skipped = evaluate_run(tmp_path / "mae", "finetune", limit=LIMIT)["finetune"]
    assert "no supervised objective" in skipped["skipped"]
