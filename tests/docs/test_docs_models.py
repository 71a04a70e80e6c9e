"""The Python examples in README.md and docs/models.md run as written."""

import re

import pytest

from helpers import REPO


def _blocks(name):
    return re.findall(r"```python\n(.*?)```", (REPO / name).read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["README.md", "docs/models.md"])
def test_python_examples_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples write under runs/
    blocks = _blocks(name)
    assert blocks, f"{name} has no python examples"
    for block in blocks:
        exec(compile(block, name, "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip()
