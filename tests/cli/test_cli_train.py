"""`zir train`, `zir train --resume`, `zir runs` and `zir export` on the command line (in-process)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import zir.train.runs
from helpers import recipe
from zir.cli import main


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(train__steps=3, train__ckpt_every=0, train__keep_last=1)))
    return path


def test_train_then_extend_with_resume_then_list_and_export(tmp_path, recipe_file, capsys):
    run = tmp_path / "runs" / "a"
    assert main(["train", str(recipe_file), "train.steps=2", "train.ema=0.9", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "step 2/2" in out and "Run standin finished" in out and "best loss" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 2 and saved["train"]["ema"] == 0.9 and saved["optim"]["betas"] == [0.9, 0.999]
    assert main(["train", "--resume", str(run), "--no-progress", "train.steps=3"]) == 0  # overrides after options too
    assert "step 3/3" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 3

    (tmp_path / "runs" / "b").mkdir()  # a run that died: status running, process gone
    (tmp_path / "runs" / "b" / "config.yaml").write_text(yaml.safe_dump(recipe()))
    (tmp_path / "runs" / "b" / "status.json").write_text(json.dumps(
        {"name": "standin", "status": "running", "step": 1, "total_steps": 6, "pid": 2 ** 22 + 7,
         "host": zir.train.runs.socket.gethostname()}))
    rows = {r["run"].split("/")[-1]: r for r in zir.train.runs.list_runs(tmp_path / "runs")}
    assert rows["a"]["status"] == "finished" and rows["a"]["step"] == 3 and rows["a"]["best"]["step"] in (1, 2, 3)
    assert rows["b"]["status"] == "stopped"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    listing = capsys.readouterr().out
    assert "finished" in listing and "stopped" in listing and "3/3" in listing

    assert main(["export", str(run), "--ema"]) == 0
    assert "load(" in capsys.readouterr().out
    model = zir.train.runs.load(run / "export" / "model.safetensors")
    from safetensors.torch import load_file

    ema_state = load_file(str(run / "checkpoints" / "step_00000003" / "ema.safetensors"))
    assert torch.equal(model.state_dict()["head.weight"], ema_state["head.weight"])


def _no_tensorboard():
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.parametrize("argv, message", [
    (["train"], "zir train needs a recipe (a shipped name such as mae, see zir recipes, or a YAML path) or --resume RUN"),
    (["train", "nope.yaml"], "recipe nope.yaml does not exist"),
    (["train", "{recipe}", "optim.lr=fast"], "optim.lr='fast': expected a number"),
    (["train", "{recipe}", "train.precision=fp16"], "train.precision='fp16' needs CUDA"),
    (["train", "{recipe}", "data.source=no_such_data"], "data source 'no_such_data'"),
    (["train", "--resume", "{tmp}/nothing"], "is not a run folder (no config.yaml)"),
    (["train", "--resume", "{tmp}", "mae"], "takes overrides only"),
    (["export", "{tmp}"], "is not a run folder"),
    (["runs", "{tmp}/none"], "is not a folder of runs"),
    pytest.param(["train", "{recipe}", "train.tensorboard=true", "--out", "{tmp}/tb"], "needs the tensorboard package",
                 marks=pytest.mark.skipif(not _no_tensorboard(), reason="tensorboard is installed")),
])
def test_user_errors_are_one_line(argv, message, recipe_file, tmp_path, capsys):
    argv = [a.format(recipe=recipe_file, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zir: error: ") and message in err and "\n" not in err


def test_a_second_train_into_the_same_folder_is_refused(tmp_path, recipe_file, capsys):
    assert main(["train", str(recipe_file), "train.steps=1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["train", str(recipe_file), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert f"continue it with `zir train --resume {tmp_path / 'run'}`" in capsys.readouterr().err


def test_bf16_autocast_trains_on_cpu(tmp_path, recipe_file):
    assert main(["train", str(recipe_file), "train.steps=2", "train.precision=bf16", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_steps"] == 0


def test_the_progress_bar_shows_loss_terms_and_rate(tmp_path, recipe_file, capsys):
    from zir.config import load_config
    from zir.train import train

    train(load_config(recipe_file, ["train.steps=2"]), tmp_path / "run", progress=True)
    out = capsys.readouterr().out
    assert "standin" in out and "ce_loss" in out and "samples/s" in out and "2/2" in out


def test_print_config_shows_the_resolved_recipe_and_trains_nothing(tmp_path, capsys):
    assert main(["train", "dino", "optim.lr=2e-4", "model.objectives.dino.out_dim=512", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 2e-4 and cfg["model"]["objectives"]["dino"]["out_dim"] == 512
    assert cfg["train"]["precision"] == "auto" and "seed" in cfg["train"]  # the recipe's value, defaults filled in
