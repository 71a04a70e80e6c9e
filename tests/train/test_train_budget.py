"""A time budget ends the run and drives the schedules by the spent share of it, on either clock."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import metrics_rows, recipe
from zir.config import from_dict
from zir.errors import ConfigError
from zir.train import Trainer
from zir.train.budget import BUDGET_RESOLUTION, NO_STEP_LIMIT


def test_a_wall_budget_alone_ends_the_run_and_the_lr_follows_the_spent_share(tmp_path):
    # at least 100 ms a step: up to 30 steps in 3 s; a loaded machine's slow first step (0.6 s seen) still
    # leaves most of the budget after the warm-up
    raw = recipe(train__steps=None, train__time_budget=3.0, train__ckpt_every=0)
    raw["model"]["sleep"] = 0.1
    trainer = Trainer(from_dict(raw), tmp_path / "run", progress=False)
    assert trainer.total_steps == NO_STEP_LIMIT
    summary = trainer.fit()
    assert summary["budget_clock"] == "wall" and summary["time_budget_s"] == 3.0
    assert summary["budget_spent_s"] >= 3.0
    assert 3 <= summary["steps"] <= 30
    # each step saw where the budget stood when it began, rising from 0 to near the end
    positions = trainer.model.positions
    assert len(positions) == summary["steps"] and {t for _, t in positions} == {BUDGET_RESOLUTION}
    fractions = [s / BUDGET_RESOLUTION for s, _ in positions]
    assert fractions == sorted(fractions) and fractions[0] < 0.1 and 0.75 < fractions[-1] < 1.0
    lrs = [float(r["lr"]) for r in metrics_rows(tmp_path / "run")]
    assert lrs[0] < 1e-3 and max(lrs) > 0.8e-3  # warm-up over the first 10% of the time, then near the peak
    assert lrs[-1] < 0.1e-3  # cosine near its end when the budget runs out


def test_steps_stay_an_upper_limit_under_a_budget(tmp_path):
    raw = recipe(train__steps=4, train__time_budget=600.0, train__budget_clock="cpu")
    summary = Trainer(from_dict(raw), tmp_path / "run", progress=False).fit()
    assert summary["steps"] == 4 and summary["budget_clock"] == "cpu"
    assert 0 < summary["budget_spent_s"] < 600


def test_a_resumed_run_spends_only_what_is_left(tmp_path):
    raw = recipe(train__steps=None, train__time_budget=0.6, train__ckpt_every=0)
    raw["model"]["sleep"] = 0.05
    first = Trainer(from_dict(raw), tmp_path / "run", progress=False).fit()
    raw["train"]["time_budget"] = 1.2  # the same run, given more time
    again = Trainer(from_dict(raw), tmp_path / "run", resume=True, progress=False)
    assert first["budget_spent_s"] - 0.3 < again.budget.spent() <= first["budget_spent_s"]  # as of the last checkpoint
    second = again.fit()
    assert second["steps"] > first["steps"] and 1.2 <= second["budget_spent_s"] < 1.2 + 1.0
    assert again.model.positions[0][0] / BUDGET_RESOLUTION >= 0.5  # the schedule picks up where the budget stood


def test_warmup_steps_hold_the_rate_down_for_that_many_updates_whatever_the_budget(tmp_path):
    # a budget of 600 CPU-s makes 10% of it thousands of virtual steps but only a handful of real ones
    # in a short run; warmup_steps counts the real ones
    raw = recipe(train__steps=8, train__time_budget=600.0, train__budget_clock="cpu", train__ckpt_every=0,
                 optim__warmup=0.0, optim__warmup_steps=4)
    Trainer(from_dict(raw), tmp_path / "run", progress=False).fit()
    lrs = [float(r["lr"]) for r in metrics_rows(tmp_path / "run")]
    assert lrs[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3], rel=1e-3)
    assert lrs[4:] == pytest.approx([1e-3] * 4, rel=1e-2)  # then the cosine, barely begun at 8 steps of 600 s


def test_warmup_steps_floor_the_fraction_without_a_budget():
    from zir.train.schedule import Schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = Schedule(opt, total=100, warmup=0.02, schedule="constant", warmup_steps=5)
    assert [round(sched.set(s), 3) for s in range(7)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]
    assert opt.param_groups[0]["lr"] == 1.0
    with pytest.raises(ConfigError, match=re.escape("optim.warmup_steps=-1: expected a whole number >= 0")):
        from_dict(recipe(optim__warmup_steps=-1))


@pytest.mark.parametrize("field, value, expected", [
    ("time_budget", -5, "train.time_budget=-5.0: expected seconds > 0 or null"),
    ("budget_clock", "sundial", "train.budget_clock='sundial': expected one of wall, cpu"),
])
def test_bad_budget_fields_name_the_field(field, value, expected):
    raw = recipe(**{f"train__{field}": value})
    with pytest.raises(ConfigError, match=re.escape(expected)):
        from_dict(raw)


def test_no_steps_epochs_or_budget_is_refused():
    with pytest.raises(ConfigError, match="train.steps, train.epochs and train.time_budget are all unset"):
        from_dict(recipe(train__steps=None))
