"""docs/search.md as written: its commands run in short (a 2-step CLIP run, 60 shapes), `zir serve` answers."""

from __future__ import annotations

import re
import shlex

from PIL import Image

from helpers import REPO
from zir.cli import main

DOC = (REPO / "docs" / "search.md").read_text()
COMMANDS = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
            for line in block.splitlines() if line.startswith("zir ")]
SHORT = {"train": ["train.steps=2", "train.ckpt_every=2", "data.batch_size=32", "data.options.n=64", "train.threads=1",
                   "train.precision=fp32", "--no-progress"], "embed": ["--no-progress"]}


def test_the_commands_run_as_written_in_short(tmp_path, monkeypatch, capsys):
    assert [shlex.split(c)[1] for c in COMMANDS] == ["train", "embed", "search", "search", "dedup", "serve"]
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "picture.png")
    monkeypatch.setattr("zir.data.builtin.ShapesSource.__len__", lambda self: min(60, len(self.data)))
    for command in COMMANDS[:-1]:
        args = shlex.split(command)[1:]
        assert main(args + SHORT.get(args[0], [])) == 0, command
    out = capsys.readouterr().out
    assert "items (0 skipped), joint space, exact index" in out and "  1  +" in out and "nothing deleted" in out
    assert (tmp_path / "runs" / "clip-dedup" / "report.html").is_file()


def test_serve_binds_this_machine_by_default():
    from zir.cli import build_parser

    args = build_parser().parse_args(shlex.split(COMMANDS[-1])[1:])
    assert args.host == "127.0.0.1" and args.port == 8000
