"""Every Python example in docs/data.md runs as written."""

import re

import pytest

from helpers import REPO

DOC = REPO / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_docs_example_runs(i, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compile(BLOCKS[i], f"{DOC}#{i}", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip()
