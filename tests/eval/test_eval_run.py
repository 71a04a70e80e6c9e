"""`evaluate_run` and `zir eval` / `zir explain` on tiny runs trained for two steps on shapes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from zir.cli import main
from zir.config import from_dict
from zir.data import ShapesSource, train_bpe
from zir.errors import ZirError
from zir.eval.run_eval import EvalError, evaluate_run, load_run, random_init_model
from zir.train import save_checkpoint, train

LIMIT = 48  # samples per split: enough for every protocol, small enough for a shared 2-core machine
QUICK_PROBE = {"Cs": (0.1, 1.0), "max_iter": 200}  # the full sweep is tested in test_eval_linear_probe.py


def tiny_recipe(objectives: dict, tokenizer=None, vocab: int = 300) -> dict:
    """A 16-px nano ViT (and a nano text tower when a tokenizer is given) on shapes, two steps."""
    towers = {"image": {"model": "vit_nano_patch4_32", "img_size": 16}}
    if tokenizer is not None:
        towers["text"] = {"model": "text_nano", "vocab_size": vocab, "context_length": 16}
    data = {"source": "shapes", "batch_size": 16, "options": {"n": 64, "size": 16, "objects": [1, 1]}}
    if tokenizer is not None:
        data["tokenizer"] = str(tokenizer)
    return {"name": "tiny", "model": {"towers": towers, "objectives": objectives}, "data": data,
            "train": {"steps": 2, "ckpt_every": 0, "threads": 1, "log_every": 1}}


@pytest.fixture(scope="module")
def coca_run(tmp_path_factory):
    """CoCa + MAE, trained for two steps by the trainer: every task and every report section applies."""
    root = tmp_path_factory.mktemp("coca")
    tok = train_bpe(ShapesSource("train", n=300, size=16).iter_captions(), vocab_size=300, context_length=16)
    tok.save(root)
    train(from_dict(tiny_recipe({"coca": {"decoder_depth": 1, "decoder_heads": 2}, "mae": {}}, root / "tokenizer.json",
                                tok.vocab_size)), root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    """An MAE-only run folder written directly (config.yaml and one checkpoint at step 0): no text tower."""
    run = tmp_path_factory.mktemp("mae") / "run"
    raw = tiny_recipe({"mae": {}})
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    model = random_init_model(raw)
    save_checkpoint(run / "checkpoints", 0, model.state_dict(), {"step": 0})
    return run


def _in_range(entry: dict) -> None:
    for key, value in entry.items():
        if key.startswith(("top", "i2t_R@", "t2i_R@", "val_top")):
            assert 0.0 <= value <= 100.0, (key, value)


def test_results_json_has_every_task_with_its_data_and_a_random_init_baseline(coca_run):
    results = evaluate_run(coca_run, limit=LIMIT, baseline=True, probe_options=QUICK_PROBE)
    saved = json.loads((coca_run / "results.json").read_text())
    assert saved == results
    assert set(saved) == {"zeroshot", "zeroshot_comp", "retrieval", "linear", "knn"}
    for task, entry in saved.items():
        assert entry["dataset"] == "shapes" and entry["step"] == 2
        assert entry["split"] == ("comp" if task == "zeroshot_comp" else "test")
        assert "skipped" not in entry
        _in_range(entry)
        _in_range(entry["random_init"])
    for task in ("zeroshot", "zeroshot_comp", "linear", "knn"):
        assert {"top1", "top5"} <= set(saved[task]) and {"top1", "top5"} <= set(saved[task]["random_init"])
    assert saved["zeroshot"]["classes"] == 5  # shapes' default label: the first object's shape
    retrieval = saved["retrieval"]
    assert retrieval["n_images"] == LIMIT and retrieval["n_captions"] == 5 * LIMIT
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_medr", "t2i_medr"):
        assert key in retrieval and key in retrieval["random_init"]
    assert 1 <= retrieval["t2i_medr"] <= LIMIT and 1 <= retrieval["i2t_medr"] <= 5 * LIMIT
    assert saved["linear"]["n_train"] == LIMIT and saved["linear"]["C"] in QUICK_PROBE["Cs"] and saved["knn"]["k"] == 20
    # features were extracted once per (weights, split) and cached in the run
    cached = sorted(p.name for p in (coca_run / "features").iterdir())
    assert len([n for n in cached if n.startswith("step2-shapes-train-pooled")]) == 1
    assert any(n.startswith("step2-shapes-test-captions") for n in cached)
    assert any(n.startswith("init-seed0-shapes-comp-pooled") for n in cached)


def test_cached_features_give_the_same_numbers_without_running_the_tower(coca_run, monkeypatch):
    evaluate_run(coca_run, "linear", limit=LIMIT, probe_options=QUICK_PROBE)  # an earlier evaluation
    first = evaluate_run(coca_run, ["knn", "zeroshot"], limit=LIMIT)
    tower = load_run(coca_run).model.towers["image"]

    def refuse(*args, **kwargs):
        raise AssertionError("the tower ran although its features are cached")

    monkeypatch.setattr(type(tower), "forward_tokens", refuse)
    again = evaluate_run(coca_run, "knn,zeroshot", limit=LIMIT)
    assert again == first
    # tasks not asked for this time stay in results.json
    assert "linear" in json.loads((coca_run / "results.json").read_text())


def test_tasks_the_model_cannot_do_are_recorded_as_skipped(mae_run):
    results = evaluate_run(mae_run, ("zeroshot", "retrieval", "knn"), limit=LIMIT)
    for task in ("zeroshot", "retrieval"):
        assert "text tower" in results[task]["skipped"]
        assert results[task]["dataset"] == "shapes"
    assert "skipped" not in results["knn"] and 0 <= results["knn"]["top1"] <= 100
    assert results["knn"]["step"] == 0


def test_a_cross_modal_run_without_its_tokenizer_skips_text_tasks(coca_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(coca_run, run, ignore=shutil.ignore_patterns("features", "results.json", "report.html", "tokenizer.json"))
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["data"]["tokenizer"] = str(tmp_path / "gone.json")
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    results = evaluate_run(run, "zeroshot,retrieval", limit=LIMIT)
    assert all("tokenizer" in results[t]["skipped"] for t in ("zeroshot", "retrieval"))


def test_user_errors_name_the_folder_or_task(mae_run, tmp_path):
    with pytest.raises(EvalError, match="not a run folder"):
        evaluate_run(tmp_path)
    with pytest.raises(EvalError, match="unknown task 'fewshot'"):
        evaluate_run(mae_run, "knn,fewshot")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((mae_run / "config.yaml").read_text())
    with pytest.raises(ZirError, match="no checkpoint"):
        evaluate_run(empty, "knn")


def test_cli_eval_prints_a_table_and_writes_results_and_report(mae_run, capsys):
    assert main(["eval", str(mae_run), "--tasks", "knn,zeroshot", "--limit", str(LIMIT), "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "knn" in out and "random init" in out and "skipped" in out
    assert "report.html" in out and (mae_run / "report.html").is_file()
    assert "random_init" in json.loads((mae_run / "results.json").read_text())["knn"]


@pytest.mark.parametrize("argv, message", [
    (["eval", "{tmp}/nowhere"], "is not a run folder"),
    (["eval", "{run}", "--tasks", "knn,nope"], "unknown task 'nope'"),
    (["explain", "{tmp}/nowhere", "x.png"], "is not a run folder"),
    (["explain", "{run}", "{tmp}/missing.png"], "does not exist"),
])
def test_cli_errors_are_one_line(argv, message, mae_run, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, run=mae_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("zir: error:")


def test_cli_explain_writes_a_picture_at_the_towers_size(mae_run, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(image)
    out = tmp_path / "explained.png"
    assert main(["explain", str(mae_run), str(image), "--out", str(out)]) == 0
    assert "patch grid 4x4" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.width > 16 * 4 and png.height > 16 * 4
    assert main(["explain", str(mae_run), str(image)]) == 0
    assert (mae_run / "explain" / "red.png").is_file()


def test_an_export_folder_is_evaluated_at_its_step(coca_run, tmp_path):
    from zir.eval.run_eval import results_table
    from zir.train.runs import export_run

    export = export_run(coca_run, tmp_path / "export").parent
    results = evaluate_run(export, "knn", limit=LIMIT)
    assert results["knn"]["step"] == 2 and (export / "results.json").is_file()
    assert results["knn"]["top1"] == evaluate_run(coca_run, "knn", limit=LIMIT, write=False)["knn"]["top1"]
    table = results_table(results)
    assert table.rows[0][:3] == ["knn", "shapes:test", "top1"] and "--baseline" in table.caption


def test_text_relevance_scores_are_the_zero_shot_cosines_and_maps_lie_on_the_patch_grid(coca_run):
    from zir.data import load_tokenizer
    from zir.eval.run_eval import image_text_objective
    from zir.eval.saliency import text_relevance

    run = load_run(coca_run)
    obj = image_text_objective(run.model)
    tok = load_tokenizer(coca_run.parent / "tokenizer.json")
    text = obj.text_encoder(tok)(["a red circle"])[0]
    images = torch.randn(3, 3, 16, 16)
    run.model.train()
    scores, maps = text_relevance(obj.tower, obj.image_proj, images, text)
    assert run.model.towers["image"].training  # its mode is given back
    assert all(p.grad is None for p in run.model.parameters())
    with torch.no_grad():
        run.model.eval()
        expected = obj.encode_image(images) @ text
    assert torch.allclose(scores, expected, atol=1e-5)
    assert maps.shape == (3, 4, 4) and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(3))


def test_cli_explain_text_shows_which_patches_moved_each_score(coca_run, mae_run, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (220, 20, 20)).save(image)
    out = tmp_path / "e.png"
    assert main(["explain", str(coca_run), str(image), "--out", str(out), "--text", "a red circle", "--text", "a blue cross"]) == 0
    printed = capsys.readouterr().out
    assert "a red circle" in printed and "a blue cross" in printed and (tmp_path / "e-text.png").is_file()
    assert main(["explain", str(mae_run), str(image), "--text", "a red circle"]) == 2
    assert "needs a run with an image-text objective" in capsys.readouterr().err
