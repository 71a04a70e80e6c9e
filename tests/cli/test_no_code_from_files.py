"""Loading a recipe, run folder or export never imports or runs code named in it; run names stay inside runs/."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import zir
from helpers import recipe
from zir.cli import _free_run_dir, main
from zir.config import from_dict
from zir.demo import _free_folder
from zir.errors import ConfigError
from zir.models import factories
from zir.train import train
from zir.train.runs import export_run

# A module that marks it was imported and that its function ran: what a hostile file would name.
EVIL = '''
from pathlib import Path
HERE = Path(__file__).parent
(HERE / "imported").write_text("imported")

def build(section):
    (HERE / "ran").write_text("ran")
    raise SystemExit("code named in a file ran")
'''
HOSTILE = ["evil_factory:build", "subprocess:call", "os:system"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-step stand-in run with its export (model.factory: standin, registered by helpers)."""
    run = tmp_path_factory.mktemp("good") / "run"
    train(from_dict(recipe(train__steps=1)), run, progress=False)
    export_run(run)
    return run


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """evil_factory importable from sys.path; returns the folder where it would leave its marks."""
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "evil_factory.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "evil_factory", raising=False)
    yield folder
    assert not (folder / "imported").exists() and not (folder / "ran").exists(), "code named in a file was run"
    assert "evil_factory" not in sys.modules


@pytest.fixture
def registry(monkeypatch):
    """The factory registry, restored after the test (the CLI flag registers into it)."""
    monkeypatch.setattr(factories, "_FACTORIES", dict(factories._FACTORIES))
    return factories._FACTORIES


def _hostile_run(trained: Path, where: Path, factory: str) -> Path:
    run = where / "run"
    shutil.copytree(trained, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["factory"] = factory
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def _hostile_export(trained: Path, where: Path, factory: str) -> Path:
    from safetensors import safe_open

    export = trained / "export" / "model.safetensors"
    with safe_open(str(export), framework="pt") as fh:
        meta = fh.metadata()
    meta["zir_model"] = meta["zir_model"].replace('"standin"', f'"{factory}"')
    assert factory in meta["zir_model"]
    out = where / "model.safetensors"
    save_file(load_file(str(export)), str(out), metadata=meta)
    return out


def _one_line_refusal(capsys, factory: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("zir: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"model.factory={factory!r}: expected the name of a registered model factory; zir never imports" in err
    return err


@pytest.mark.parametrize("factory", HOSTILE)
def test_zir_load_refuses_an_export_that_names_code(trained, evil, tmp_path, factory):
    export = _hostile_export(trained, tmp_path, factory)
    with pytest.raises(ConfigError) as refused:
        zir.load(export)
    assert str(refused.value) == (
        f"{export} (zir_model metadata): model.factory={factory!r}: expected the name of a registered model factory; "
        "zir never imports code named in a file (register it in Python with zir.register_model_factory(name, "
        "function), or pass zir train --import-factory module:function)")


@pytest.mark.parametrize("factory", HOSTILE)
def test_eval_explain_and_resume_refuse_a_run_folder_that_names_code(trained, evil, tmp_path, capsys, factory):
    run = _hostile_run(trained, tmp_path, factory)
    image = tmp_path / "img.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["eval", str(run), "--no-report"]) == 2
    assert f"{run / 'config.yaml'}: " in _one_line_refusal(capsys, factory)
    assert main(["explain", str(run), str(image)]) == 2
    _one_line_refusal(capsys, factory)
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--no-progress", "train.steps=2"]) == 2
    assert f"{run / 'config.yaml'}: " in _one_line_refusal(capsys, factory)
    assert (run / "config.yaml").read_text() == before  # nothing written


def test_train_refuses_a_recipe_that_names_code_before_writing_anything(evil, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(model__factory="evil_factory:build")))
    assert main(["train", "r.yaml", "--no-progress"]) == 2
    _one_line_refusal(capsys, "evil_factory:build")
    assert not (tmp_path / "runs").exists()


def test_an_unregistered_plain_name_lists_the_registered_ones(trained, tmp_path, registry):
    export = _hostile_export(trained, tmp_path, "not_registered")
    with pytest.raises(ConfigError, match=r"model.factory='not_registered': no such model factory in this process "
                                          r"\(registered: standin\); register it in Python"):
        zir.load(export)


def test_a_registered_factory_loads_from_python(trained, registry):
    model = zir.load(trained / "export" / "model.safetensors")
    assert type(model).__name__ == "StandIn" and not model.training
    assert "standin" in zir.list_model_factories()
    with pytest.raises(ValueError, match="'standin' is already registered"):
        zir.register_model_factory("standin", lambda section: None)
    with pytest.raises(ValueError, match="expected letters, digits"):
        zir.register_model_factory("evil_factory:build", lambda section: None)


FLAGGED = '''
from helpers import StandIn

CALLS = []

def build(section):
    CALLS.append(dict(section))
    return StandIn(**section)
'''


def test_the_import_factory_flag_registers_under_the_recipes_name(tmp_path, registry, capsys, monkeypatch):
    (tmp_path / "flagged_factory.py").write_text(FLAGGED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flagged_factory", raising=False)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(model__factory="my_net", train__steps=1)))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress"]) == 2
    assert "model.factory='my_net': no such model factory in this process (registered: standin)" in capsys.readouterr().err
    args = ["train", str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress", "--import-factory", "flagged_factory:build"]
    assert main(args) == 0
    assert registry["my_net"] is sys.modules["flagged_factory"].build
    assert sys.modules["flagged_factory"].CALLS == [{}]
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["factory"] == "my_net"
    # a resume from the command line needs the flag again: the run folder alone never imports it
    del registry["my_net"]
    assert main(["train", "--resume", str(run), "train.steps=2", "--no-progress"]) == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.steps=2", "--no-progress", "--import-factory", "flagged_factory:build"]) == 0
    assert "step 2/2" in capsys.readouterr().out


@pytest.mark.parametrize("target, recipe_over, message", [
    ("flagged_factory.build", {}, "--import-factory 'flagged_factory.build': expected module:function"),
    ("no_such_module_zir:build", {}, "--import-factory no_such_module_zir:build: cannot import no_such_module_zir"),
    ("zir.cli:no_such_function", {}, "--import-factory zir.cli:no_such_function: zir.cli has no function no_such_function"),
    ("zir.cli:main", {"model__factory": None}, "sets no model.factory; name the factory there"),
])
def test_import_factory_flag_errors_are_one_line(tmp_path, registry, capsys, target, recipe_over, message):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(**recipe_over)))
    assert main(["train", str(tmp_path / "r.yaml"), "--import-factory", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zir: error: ") and err.count("\n") == 1 and message in err, err


# -- run names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../tmp/x", "/etc/x", "a/b", "a\\b", ".hidden", "..", ".", "", "a b", "x:y"])
def test_a_recipe_name_that_is_not_a_plain_name_is_refused(name):
    raw = recipe()
    raw["name"] = name if name else " "
    with pytest.raises(ConfigError, match=r"config: name=.*: expected a plain name of letters, digits, - _ and \."):
        from_dict(raw)
    with pytest.raises(ConfigError, match="expected a plain name"):
        _free_run_dir(name)


@pytest.mark.parametrize("name", ["mae", "mae-2", "vit_b.16", "7", "-x"])
def test_plain_names_are_accepted(name):
    raw = recipe()
    raw["name"] = name
    assert from_dict(raw).name == name


def test_a_name_cannot_place_a_run_outside_runs_but_out_is_used_as_given(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "r.yaml").write_text(yaml.safe_dump(recipe(train__steps=1)))
    assert main(["train", "r.yaml", "name=../../escaped", "--no-progress"]) == 2
    assert "name='../../escaped': expected a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not (work / "runs").exists()
    assert main(["train", "r.yaml", "--out", "../elsewhere", "--no-progress"]) == 0  # the user named it
    assert (tmp_path / "elsewhere" / "checkpoints").is_dir() and not (work / "runs").exists()
    assert _free_run_dir("standin") == str(Path("runs") / "standin")


def test_demo_numbers_the_folder_it_was_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("name: old\n")
    assert _free_folder(Path(".")) == tmp_path.parent / f"{tmp_path.name}-2"
    assert _free_folder(Path("runs/demo")) == Path("runs/demo")
    (tmp_path / "runs" / "demo" / "checkpoints").mkdir(parents=True)
    assert _free_folder(Path("runs/demo")) == Path("runs/demo-2")
