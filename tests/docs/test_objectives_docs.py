"""Every Python example in docs/objectives.md runs as written."""

import re

import pytest
import torch

from helpers import REPO

DOC = REPO / "docs" / "objectives.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_docs_example_runs(i, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(BLOCKS[i], f"{DOC}#{i}", "exec"), {"__name__": "docs_example"})
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip()
