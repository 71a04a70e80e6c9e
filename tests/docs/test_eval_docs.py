"""The example in docs/evaluation.md runs and prints a result for every protocol."""

import json
import re

from helpers import REPO

DOC = REPO / "docs" / "evaluation.md"


def test_runnable_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = next(b for b in blocks if "print(json.dumps(results" in b)
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_example"})
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"knn", "linear", "retrieval", "zeroshot"}
    assert all(0.0 <= results[task]["top1"] <= 100.0 for task in ("knn", "linear", "zeroshot"))
    assert results["retrieval"]["i2t_R@10"] == 100.0
