"""docs/audio.md as written: its Python example runs anywhere; its shell commands run on FSDD (skipped where this
machine lacks ../shared/data), shortened to two steps of the nano tower and 40 recordings a split."""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import REPO, SHARED
from zir.cli import main

DOC = (REPO / "docs" / "audio.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
COMMANDS = [line for block in re.findall(r"```bash\n(.*?)```", DOC, flags=re.S) for line in block.splitlines()
            if line.startswith("zir ")]
SHORT = {"train": ["train.steps=2", "data.batch_size=16", "train.threads=1", "model.towers.audio.model=ast_nano",
                   "--no-progress"],
         "eval": ["--limit", "40", "--no-report"], "data": ["--limit", "40"]}


def test_the_python_example_runs(capsys):
    assert len(PYTHON) == 1
    exec(compile(PYTHON[0], "docs/audio.md", "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "('high', 'low')" in out and "torch.Size([4, 1, 64, 64]) torch.Size([4, 13])" in out
    assert "torch.Size([4, 14, 64])" in out


def test_the_commands_name_the_shared_data_and_the_shipped_recipes():
    assert [c.split()[1] for c in COMMANDS] == ["data", "train", "eval", "train", "eval", "data", "train", "eval", "eval",
                                                "train", "train", "eval", "train", "eval", "eval"]
    assert all("/work/shared/data" in c for c in COMMANDS if c.split()[1] in ("data", "train"))


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_the_commands_run_as_written_in_short(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # configs/... as written; runs and pictures go to tmp_path
    for command in COMMANDS:
        args = [a.replace("/work/shared/data", str(SHARED)) for a in shlex.split(command)[1:]]
        args = [str(tmp_path / a) if a.startswith("runs/") or a.endswith(".png") else a for a in args]
        assert main(args + SHORT[args[0]]) == 0, command
    out = capsys.readouterr().out
    assert "fsdd:test" in out and "8000 Hz" in out and "zeroshot" in out and "av_retrieval" in out
