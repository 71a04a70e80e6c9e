"""Checkpoints survive kills mid-save; the non-finite step guard skips, logs, and stops with the last good one intact."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from helpers import metrics_rows, recipe
from zir.config import from_dict
from zir.train import TrainingDiverged, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint, train

def _save_then_die_mid_save(folder):
    """In a forked child: save step 1, then die (SIGKILL) half-way through writing step 2's trainer state."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            save_checkpoint(folder, 1, {"w": torch.ones(3)}, {"step": 1})

            def dying(obj, fh, *args, **kwargs):
                fh.write(b"PK half a file")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = dying
            save_checkpoint(folder, 2, {"w": torch.zeros(3)}, {"step": 2})
        finally:
            os._exit(3)
    return os.waitpid(pid, 0)[1]


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    folder = tmp_path / "checkpoints"
    status = _save_then_die_mid_save(folder)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert [p.name for p in list_checkpoints(folder)] == ["step_00000001"]
    assert any(p.name.startswith(".tmp-step_00000002") for p in folder.iterdir())  # the half-written one, hidden
    path, (model, state, ema) = latest_checkpoint(folder)
    assert path.name == "step_00000001" and torch.equal(model["w"], torch.ones(3)) and state["step"] == 1
    save_checkpoint(folder, 3, {"w": torch.full((3,), 3.0)}, {"step": 3})  # the next save sweeps the leftovers
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001", "step_00000003"]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step))}, {"step": step}, keep_last=5)
    newest = tmp_path / "step_00000002" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:20])
    path, (model, state, _) = latest_checkpoint(tmp_path)
    assert path.name == "step_00000001" and state["step"] == 1
    assert "unreadable" in caplog.text


def test_keep_last_and_weights_only_state(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"w": torch.zeros(2)}, {"step": step, "rng": torch.get_rng_state()}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]
    _, state, _ = load_checkpoint(tmp_path / "step_00000005")
    assert state["step"] == 5 and state["rng"].dtype == torch.uint8


def test_a_nan_loss_skips_the_step_and_is_logged(tmp_path, caplog):
    raw = recipe(train__steps=5, train__ckpt_every=1, train__keep_last=10)
    raw["model"]["nan_at"] = [2]  # the third step's loss is NaN
    summary = train(from_dict(raw), tmp_path / "run", progress=False)
    assert summary["skipped_steps"] == 1 and summary["steps"] == 5
    rows = metrics_rows(tmp_path / "run")
    assert [r["skipped"] for r in rows] == ["0", "0", "1", "0", "0"] and math.isnan(float(rows[2]["loss"]))
    assert "step 3 skipped: non-finite loss=nan (1 in a row)" in caplog.text
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name[-1] for p in ckpts] == ["1", "2", "4", "5"]  # none written during a run of bad steps
    model, state, _ = load_checkpoint(ckpts[2])
    assert state["optimizer"]["state"][0]["step"].item() == 3  # steps 1, 2 and 4 were applied, 3 was not
    assert model["after_calls"].item() == 3  # nor did the objectives' after_step run for it


def test_k_bad_steps_in_a_row_stop_the_run_with_the_last_good_checkpoint_intact(tmp_path):
    raw = recipe(train__steps=8, train__ckpt_every=1, train__keep_last=2, train__max_bad_steps=3)
    raw["model"]["nan_at"] = [2, 3, 4]
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train(from_dict(raw), run, progress=False)
    message = str(err.value)
    assert "3 non-finite steps in a row (last at step 5, loss=nan)" in message
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step_00000002'}" in message and "optim.lr" in message
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000001", "step_00000002"]
    assert load_checkpoint(run / "checkpoints" / "step_00000002")[1]["step"] == 2
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"


def test_trainer_pt_keeps_its_layout_and_the_train_state_reads_it_back(tmp_path):
    from zir.train.train_state import TrainState

    raw = recipe(train__steps=3, train__keep_last=1)
    raw["model"]["nan_at"] = [1]
    summary = train(from_dict(raw), tmp_path / "run", progress=False)
    _, state, _ = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert list(state) == ["step", "total_steps", "optimizer", "strategy", "scaler", "rng", "data", "precision",
                           "bad_in_row", "skipped_total", "best", "elapsed", "world_size", "base_lr", "budget_spent"]
    assert (state["step"], state["bad_in_row"], state["skipped_total"], state["strategy"]) == (3, 0, 1, "ddp")
    assert state["data"] == {"epoch": 0, "samples": 3 * raw["data"]["batch_size"], "batches": 3}
    assert state["best"] == summary["best"] and state["best"]["step"] in (1, 3)
    back = TrainState.from_checkpoint(state)
    assert (back.step, back.skipped_total, back.best, back.elapsed_before) == (3, 1, state["best"], state["elapsed"])
    old = TrainState.from_checkpoint({"step": 7})  # a checkpoint from before the loop counted bad steps
    assert (old.step, old.bad_in_row, old.skipped_total, old.best, old.elapsed_before, old.budget_spent_before) == (7, 0, 0, {}, 0.0, 0.0)


def test_the_train_state_keeps_the_lowest_finite_loss_and_the_newest_row():
    from zir.train.train_state import TrainState

    s = TrainState()
    for step, loss in enumerate([2.0, float("nan"), 1.5, 1.7], start=1):
        s.record({"step": step, "loss": loss})
    assert s.best == {"loss": 1.5, "step": 3} and s.last_row == {"step": 4, "loss": 1.7}
