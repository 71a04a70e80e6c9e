"""`load_run()`: the one loader of run folders, checkpoint folders and exports (config, model, tokenizer, data
settings, which weights it read), below train and eval; `zir export`, `model.init` and `zir.load` read
runs through it."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

import zir
from helpers import REPO, TEXT_NANO
from zir.checkpoint import save_checkpoint
from zir.eval.run_loading import random_init_model
from zir.run_loading import RunError, load_run, run_weights
from zir.train.runs import export_run

RECIPE = {"name": "tiny", "train": {"steps": 1},
          "model": {"towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16}, "text": dict(TEXT_NANO)},
                    "objectives": {"clip": {}}},
          "data": {"source": "shapes", "batch_size": 8, "tokenizer": "shapes", "options": {"n": 16, "size": 16}}}


def _shifted(state: dict, by: float) -> dict:
    return {k: v + by if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture()
def run(tmp_path):
    """A run folder written directly: config.yaml and checkpoints at steps 1 and 3 (the second with an EMA)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(RECIPE))
    state = random_init_model(RECIPE).state_dict()
    save_checkpoint(folder / "checkpoints", 1, state, {"step": 1})
    save_checkpoint(folder / "checkpoints", 3, _shifted(state, 1.0), {"step": 3}, ema_state=_shifted(state, 2.0))
    return folder


def _weight(model) -> torch.Tensor:
    return model.towers["image"].patch_embed.proj.weight.detach()


def test_a_run_folder_loads_at_its_newest_checkpoint_with_its_config_tokenizer_and_data(run):
    loaded = load_run(run)
    assert loaded.step == 3 and loaded.source.endswith("step_00000003") and loaded.run_dir == run
    assert not loaded.model.training and not loaded.ema
    assert loaded.config == RECIPE and loaded.data == RECIPE["data"]
    ids = loaded.tokenizer(["a red circle"])
    assert torch.as_tensor(ids).shape[-1] == TEXT_NANO["context_length"]
    first = random_init_model(RECIPE)
    assert torch.allclose(_weight(loaded.model), _weight(first) + 1.0)
    assert torch.allclose(_weight(load_run(run, ema=True).model), _weight(first) + 2.0)


def test_a_checkpoint_folder_and_an_export_load_the_same_way(run):
    one = load_run(run / "checkpoints" / "step_00000001")
    assert one.step == 1 and one.run_dir == run and one.config == RECIPE
    export = export_run(run)
    for path in (export, export.parent):
        loaded = load_run(path)
        assert loaded.step == 3 and loaded.source == str(export) and loaded.config == RECIPE
        assert torch.equal(_weight(loaded.model), _weight(load_run(run).model))
    assert torch.equal(_weight(zir.load(run)), _weight(load_run(run).model))  # zir.load reads the export


def test_what_a_path_stands_for_and_its_one_line_errors(run, tmp_path):
    assert run_weights(run, kind="checkpoint").step == 3
    with pytest.raises(RunError, match=r"holds no model.safetensors; run `zir export .*` first"):
        load_run(run, kind="export")
    with pytest.raises(RunError, match="nowhere is not a run folder nor a zir export \\(it does not exist\\)"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="empty has no checkpoint nor export to load \\(train it first\\)"):
        load_run(tmp_path / "empty")
    save_checkpoint(run / "checkpoints", 4, random_init_model(RECIPE).state_dict(), {"step": 4})
    with pytest.raises(RunError, match="keeps no weight EMA"):
        load_run(run, ema=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**RECIPE, "model": {"towers": {"image": {"model": "vit_nano_patch4_32"}},
                                                                         "objectives": {"mae": {}}}}))
    with pytest.raises(RunError, match=r"step_00000004 does not fit the run's config.yaml: "):
        load_run(run)


def test_the_documented_example_runs(run, capsys):
    text = (REPO / "docs" / "training.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "load_run(" in b)
    exec(compile(block.replace("runs/mae-quick", str(run)), "docs/training.md", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip().endswith("step_00000003 3")
