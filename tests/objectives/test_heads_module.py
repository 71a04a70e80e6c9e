"""Heads live in one module (zir.objectives.heads): objectives import them, none defines its own."""

from __future__ import annotations

import re

from helpers import REPO


def test_every_head_class_is_defined_in_the_heads_module():
    head = re.compile(r"^class (\w*(Head|Predictor|Linear))\(nn\.Module\)", flags=re.M)
    where = {name: path.name for path in (REPO / "src/zir/objectives").glob("*.py")
             for name, _ in head.findall(path.read_text())}
    assert {"MLPHead", "DINOHead", "WeightNormLinear", "ClassifierHead", "SimSiamPredictor"} <= set(where)
    # I-JEPA's predictor is a transformer over tokens, the objective's own machinery (as MAE's decoder)
    assert {name: file for name, file in where.items() if file != "heads.py"} == {"JEPAPredictor": "ijepa.py"}
