"""What is never lost: a complete checkpoint stays visible through a kill at any point of a save, a full disk,
and non-finite weights at the end of a run."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from zir.train import checkpoint as ckpt
from zir.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, save_checkpoint


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the except clauses' clean-up."""


def _save_killed_at(monkeypatch, k, *save_args, **save_kwargs) -> bool:
    """Run save_checkpoint, dying at its k-th rename or delete; False when it finished before reaching it."""
    real_replace, real_rmtree = os.replace, shutil.rmtree
    calls = {"n": 0, "dead": False}

    def step(real):
        def wrapped(*args, **kwargs):
            if calls["dead"]:
                return None  # a dead process renames and deletes nothing
            calls["n"] += 1
            if calls["n"] == k:
                calls["dead"] = True
                raise Killed
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(os, "replace", step(real_replace))
    monkeypatch.setattr(shutil, "rmtree", step(real_rmtree))
    try:
        save_checkpoint(*save_args, **save_kwargs)
        return False
    except Killed:
        return True
    finally:
        monkeypatch.setattr(os, "replace", real_replace)
        monkeypatch.setattr(shutil, "rmtree", real_rmtree)


def _w(value):
    return {"w": torch.full((3,), value)}


@pytest.mark.parametrize("same_step", [False, True], ids=["next step", "re-save of the same step"])
def test_a_kill_at_any_rename_or_delete_of_a_save_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, same_step):
    new_step, new_value = (2, 2.5) if same_step else (3, 3.0)
    kills = 0
    for k in range(1, 50):
        folder = tmp_path / f"k{k}"
        save_checkpoint(folder, 1, _w(1.0), {"step": 1}, keep_last=1)
        save_checkpoint(folder, 2, _w(2.0), {"step": 2}, keep_last=1)
        if not _save_killed_at(monkeypatch, k, folder, new_step, _w(new_value), {"step": new_step}, keep_last=1):
            break
        kills += 1
        path, (model, state, _) = latest_checkpoint(folder)
        assert (state["step"], model["w"][0].item()) in ((2, 2.0), (new_step, new_value)), (k, path)
        # the next save after the kill cleans up, keeps one, and it loads
        save_checkpoint(folder, 4, _w(4.0), {"step": 4}, keep_last=1)
        assert [p.name for p in folder.iterdir()] == ["step_00000004"]
    assert kills >= 2  # every rename and delete of the save was a kill point


def test_a_re_save_cut_between_its_two_renames_still_lists_the_old_copy(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 2, _w(2.0), {"step": 2}, keep_last=1)
    assert _save_killed_at(monkeypatch, 2, tmp_path, 2, _w(2.5), {"step": 2}, keep_last=1)  # 1st: old aside; 2nd: new in
    assert not (tmp_path / "step_00000002").exists()
    [listed] = list_checkpoints(tmp_path)
    assert listed.name.startswith(".old-step_00000002-")
    assert latest_checkpoint(tmp_path)[1][1]["step"] == 2


def test_an_incomplete_checkpoint_folder_is_not_listed(tmp_path):
    save_checkpoint(tmp_path, 1, _w(1.0), {"step": 1})
    (tmp_path / "step_00000002").mkdir()  # e.g. copied by hand, half-way
    (tmp_path / "step_00000002" / ckpt.MODEL_FILE).write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_a_full_disk_is_one_line_removes_the_partial_files_and_keeps_older_checkpoints(tmp_path, monkeypatch, writer):
    save_checkpoint(tmp_path, 1, _w(1.0), {"step": 1}, keep_last=1)

    def full(obj, target, *args, **kwargs):
        if isinstance(target, str):
            open(target, "wb").write(b"half")
        else:
            target.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch if writer == "safetensors" else torch, "save_file" if writer == "safetensors" else "save", full)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(tmp_path, 2, _w(2.0), {"step": 2}, keep_last=1)
    assert str(err.value) == f"no space left on device writing {tmp_path / 'step_00000002'}; the older checkpoints are kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]  # no partial files
    assert latest_checkpoint(tmp_path)[1][1]["step"] == 1


def test_a_write_that_fails_on_a_full_file_system_is_named_so(tmp_path, monkeypatch):
    # torch.save reports a failed write as "unexpected pos", without the errno: the free space tells
    save_checkpoint(tmp_path, 1, _w(1.0), {"step": 1}, keep_last=1)

    def short(obj, fh, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", short)
    monkeypatch.setattr(os, "statvfs", lambda path: Full)
    with pytest.raises(CheckpointError, match="^no space left on device writing .*step_00000002; the older"):
        save_checkpoint(tmp_path, 2, _w(2.0), {"step": 2}, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with space left it is not called a full disk
        monkeypatch.setattr(torch, "save", short)
        save_checkpoint(tmp_path, 2, _w(2.0), {"step": 2}, keep_last=1)


# -- non-finite weights near the end of a run ------------------------------------------------------------

def test_bad_steps_at_the_end_never_save_non_finite_weights_nor_rotate_out_the_last_good_one(tmp_path, capsys):
    from helpers import recipe
    from zir.cli import main
    from zir.train.runs import export_run

    import yaml

    # weights turn NaN after step 4; steps 5 and 6 are skipped (2 in a row < max_bad_steps=5) and the run ends
    raw = recipe(train__steps=6, train__ckpt_every=3, train__keep_last=1)
    raw["model"]["poison_after"] = 4
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "finished" not in err
    assert err.splitlines()[-1] == (f"zir: error: the weights at step 6 are not finite (model head.weight); no checkpoint written; "
                   f"the last good checkpoint is {run / 'checkpoints' / 'step_00000003'}; try a lower optim.lr, "
                   f"optim.clip_grad, or train.precision=fp32")
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000003"]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged" and "not finite" in status["error"]
    assert not (run / "summary.json").exists()
    exported = export_run(run)
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(exported)).values())


def test_a_periodic_checkpoint_of_non_finite_weights_is_refused(tmp_path):
    from helpers import recipe
    from zir.config import from_dict
    from zir.train import TrainingDiverged, train

    raw = recipe(train__steps=8, train__ckpt_every=2, train__keep_last=1)
    raw["model"]["poison_after"] = 4  # step 4 itself looked fine: only the weights tell
    with pytest.raises(TrainingDiverged, match=r"^the weights at step 4 are not finite \(model head.weight\); no checkpoint "
                                               r"written; the last good checkpoint is .*step_00000002;"):
        train(from_dict(raw), tmp_path / "run", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000002"]


def test_export_refuses_a_checkpoint_of_non_finite_weights(tmp_path):
    from helpers import recipe
    from zir.errors import WeightsError
    from zir.train.runs import export_run

    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recipe()))
    save_checkpoint(tmp_path / "checkpoints", 1, {"w": torch.tensor([1.0, float("inf")])}, {"step": 1})
    with pytest.raises(WeightsError, match=r"step_00000001 holds non-finite weights \(w\); nothing exported"):
        export_run(tmp_path)
    assert not (tmp_path / "export").exists()


def test_a_full_disk_while_writing_metrics_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    from helpers import recipe
    from zir.cli import main
    from zir.train import metrics_log

    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(train__steps=4, train__ckpt_every=1)))

    def full(self, row):
        if row["step"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics_log.MetricsLog, "write", full)
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (f"zir: error: no space left on device writing {tmp_path / 'run'}; "
                                    f"the checkpoints already written are kept")
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000001", "step_00000002"]
