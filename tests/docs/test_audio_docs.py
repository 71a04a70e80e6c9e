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
    assert len(PYTHON) == 2  # make_sounds.py (tested below) and the front end's example
    [example] = [block for block in PYTHON if "spectrogram_stats" in block]
    exec(compile(example, "docs/audio.md", "exec"), {"__name__": "docs_example"})
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


def test_own_recordings_a_table_of_wav_and_flac_trains_with_mixing_as_written(tmp_path, monkeypatch, capsys):
    section = DOC[DOC.index("### Your own recordings"):DOC.index("## The front end")]
    [script] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    lines = block.splitlines()
    assert lines[0] == "python make_sounds.py"
    exec(compile(script, "make_sounds.py", "exec"), {"__name__": "__main__"})
    short = {"data": [], "train": ["train.threads=1", "--no-progress"]}
    for line in lines[1:]:
        args = [str(REPO / a) if a.startswith("configs/") else a for a in shlex.split(line)[1:]]
        assert main(args + short[args[0]]) == 0, line
    out = capsys.readouterr().out
    assert "audio-table:sounds/captions.csv" in out and "samples     16 (read 16, usable 16)" in out
    assert (tmp_path / "runs" / "audio_table" / "checkpoints").is_dir()
