"""docs/training.md stays in step with the code: every config field is in its table, every recipe in its list."""

from __future__ import annotations

import dataclasses
import re

from helpers import REPO
from zir.config import DataConfig, OptimConfig, TrainConfig
from zir.recipes import list_recipes

DOC = (REPO / "docs" / "training.md").read_text()


def test_every_config_field_is_documented():
    documented = set(re.findall(r"`((?:data|optim|train)\.[a-z_]+)`", DOC))
    for section, cls in (("data", DataConfig), ("optim", OptimConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in documented, f"{section}.{f.name} is missing from docs/training.md"


def test_every_recipe_is_listed():
    for name in list_recipes():
        assert f"| `{name}` |" in DOC, name
