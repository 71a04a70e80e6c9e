"""docs/interop.md as written: its Python example runs, and its commands fine-tune the transformers CLIP fixture
and export the run as a transformers CLIPModel folder that zir.load reads (and as ONNX, with the dev extra)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex

import torch

import zir
from helpers import REPO
from zir.cli import main

PAGE = REPO / "docs" / "interop.md"


def test_the_python_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the example reads the fixtures by their repository paths
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), {"__name__": "docs_example"})
    assert "torch.Size([2, 24])" in capsys.readouterr().out


def test_the_commands_train_from_the_fixture_and_export_a_clip_model(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
                for line in block.splitlines() if line.startswith("zir ")]
    assert [c.split()[1] for c in commands] == ["train", "export", "export"]
    onnx = importlib.util.find_spec("onnx") is not None
    for command in commands:
        args = [a.replace("tests/fixtures", str(REPO / "tests" / "fixtures")).replace("configs/", str(REPO / "configs") + "/")
                for a in shlex.split(command)[1:]]
        if args[0] == "train":
            args += ["data.options.n=64", "train.threads=1", "train.precision=fp32"]
        if "onnx" in args and not onnx:  # the dev extra is missing: one line saying what to install
            assert main(args) != 0
            continue
        assert main(args) == 0
    folder = tmp_path / "runs" / "clip-from-hf" / "export_hf"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip"
    assert "license: mit" in (folder / "README.md").read_text()
    assert zir.load(folder).encode_text(["a red circle"]).shape == (1, 24)
