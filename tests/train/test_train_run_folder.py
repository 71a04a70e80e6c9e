"""The run folder is one process's: a second one is refused naming the holder, a dead holder's lock is taken
over, a refused start or resume leaves every byte as it was, and a bad --out or model value is one line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import PY, env, one_line_error, recipe
from zir.cli import main
from zir.train import run_lock
from zir.train.run_lock import LOCK_FILE, RunInUse, RunLock


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(train__steps=2, train__ckpt_every=1, train__keep_last=1)))
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- a failed resume changes nothing ---------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("model.classes=abc", "model.factory='standin': the model does not build from these values (TypeError"),
    ("model.classes=7", "does not fit this config's model (2 misshaped weights such as head.weight (10, 64) vs (7, 64)"),
    ("data.source=no_such_data", "data source 'no_such_data'"),
    ("optim.lr=inf", "optim.lr='inf': expected a finite number"),
])
def test_a_failed_resume_leaves_the_run_folder_byte_identical(tmp_path, recipe_file, capsys, override, message):
    run = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(run), "--no-progress"]) == 0
    before = _hashes(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), override, "train.steps=4", "--no-progress"]) == 2
    assert message in one_line_error(capsys)
    assert _hashes(run) == before  # config.yaml, train.log, status.json, metrics.csv, checkpoints: every byte
    assert main(["train", "--resume", str(run), "train.steps=3", "--no-progress"]) == 0  # and it still resumes
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 3


# -- one process per run folder --------------------------------------------------------------------------

def test_a_live_run_is_refused_naming_its_process_and_the_folder_is_left_alone(tmp_path, recipe_file, capsys):
    run = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(run), "--no-progress"]) == 0
    assert not (run / LOCK_FILE).exists()  # released at the end
    before = _hashes(run)
    capsys.readouterr()
    with RunLock(run):  # as a live `zir train` holds it
        held = _hashes(run)
        for argv in (["train", "--resume", str(run), "train.steps=4"], ["train", str(recipe_file), "--out", str(run)]):
            assert main([*argv, "--no-progress"]) == 2
            err = one_line_error(capsys)
            assert err.startswith(f"run folder {run} is in use by pid {os.getpid()} on host {socket.gethostname()} since ")
            assert err.endswith(f"(lock file {run / LOCK_FILE}); wait for it to end or stop it first")
            assert _hashes(run) == held
    assert _hashes(run) == before


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path, recipe_file, capsys, caplog):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([PY, "-c", "import sys, time; from zir.train.run_lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(run)],
                              env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
        assert main(["train", str(recipe_file), "--out", str(run), "--no-progress"]) == 2
        assert f"is in use by pid {holder.pid} on host" in one_line_error(capsys)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / LOCK_FILE).exists()  # the dead holder's lock file is still there ...
    assert main(["train", str(recipe_file), "--out", str(run), "--no-progress"]) == 0  # ... and taken over
    assert f"took over the lock left by pid {holder.pid} on host" in caplog.text
    assert not (run / LOCK_FILE).exists()


def _dead_pid() -> int:
    done = subprocess.Popen([PY, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_dead_runs_lock_still_held_by_its_children_is_taken_over(tmp_path, caplog):
    # data loader workers forked by a run killed with -9 hold its flock for a moment after it is gone
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    child = subprocess.Popen([PY, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                              "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, sys.argv[2].encode()); print('held', flush=True); "
                              "time.sleep(600)", str(tmp_path / LOCK_FILE), json.dumps(record)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with RunLock(tmp_path):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
            with pytest.raises(RunInUse, match=f"in use by pid {os.getpid()}"):  # and it is a real lock again
                RunLock(tmp_path).acquire()
        assert f"took over the lock of pid {record['pid']} on host" in caplog.text
        assert not (tmp_path / LOCK_FILE).exists()
    finally:
        child.kill()
        child.wait(timeout=30)


def test_without_flock_a_live_pid_holds_the_lock_and_a_dead_one_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "fcntl", None)
    dead, here = _dead_pid(), socket.gethostname()
    for record, refused in (({"pid": os.getppid(), "host": here}, True), ({"pid": dead, "host": here}, False),
                            ({"pid": dead, "host": "elsewhere"}, True)):
        (tmp_path / LOCK_FILE).write_text(json.dumps(record))
        if refused:
            with pytest.raises(RunInUse, match=f"in use by pid {record['pid']} on host {record['host']}"):
                RunLock(tmp_path).acquire()
        else:
            lock = RunLock(tmp_path).acquire()
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
            lock.release()
            assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_when_a_run_fails_or_is_interrupted(tmp_path, recipe_file):
    from zir.config import from_dict
    from zir.train import TrainingDiverged, TrainingInterrupted, train

    raw = recipe(train__steps=4, train__max_bad_steps=1)
    raw["model"]["nan_at"] = [1]
    with pytest.raises(TrainingDiverged):
        train(from_dict(raw), tmp_path / "a", progress=False)
    raw = recipe(train__steps=4)
    raw["model"]["signal_at"] = 1
    with pytest.raises(TrainingInterrupted):
        train(from_dict(raw), tmp_path / "b", progress=False)
    for run in ("a", "b"):
        assert (tmp_path / run / "status.json").exists() and not (tmp_path / run / LOCK_FILE).exists()


# -- one line for a bad --out or model value, nothing written ---------------------------------------------

def test_a_model_value_of_the_wrong_type_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    argv = ["train", "mae", "model.towers.image.depth=abc", "train.steps=1", "--out", str(out)]
    assert main(argv) == 2
    assert one_line_error(capsys) == ("model.towers.image: does not build from depth='abc' "
                                 "(TypeError: 'str' object cannot be interpreted as an integer)")
    assert list(tmp_path.iterdir()) == []  # neither runs/x nor runs/ is left behind


def test_an_objective_value_of_the_wrong_type_names_the_objective(tmp_path, capsys):
    argv = ["train", "mae", "model.objectives.mae.decoder_depth=two", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert err.startswith("model.objectives.mae: does not build from ") and "decoder_depth='two'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out, message", [
    ("file", "run folder {tmp}/file is an existing file; choose another --out"),
    ("file/run", "run folder {tmp}/file/run cannot be created: {tmp}/file is a file; choose another --out"),
])
def test_an_out_that_is_or_lies_under_a_file_is_one_line(tmp_path, recipe_file, capsys, out, message):
    (tmp_path / "file").write_text("keep me")
    assert main(["train", str(recipe_file), "--out", str(tmp_path / out), "--no-progress"]) == 2
    assert one_line_error(capsys) == message.format(tmp=tmp_path)
    assert (tmp_path / "file").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "r.yaml"]


def test_an_out_that_cannot_be_created_is_one_line_and_leaves_nothing(tmp_path, recipe_file, capsys, monkeypatch):
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self.name == "run":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    assert main(["train", str(recipe_file), "--out", str(tmp_path / "a" / "run"), "--no-progress"]) == 2
    assert one_line_error(capsys) == f"run folder {tmp_path}/a/run cannot be created: Permission denied ({tmp_path}/a/run)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # the parent it made is removed again


def test_a_parent_made_by_another_run_meanwhile_is_not_an_error(tmp_path, monkeypatch):
    """Two runs started side by side (benchmarks' --jobs 2) both find runs/suite missing; the second mkdir lost."""
    from zir.train.run_folder import create_run_dir

    parent, run = tmp_path / "suite", tmp_path / "suite" / "clip-s0"
    real_mkdir = Path.mkdir

    def racing_mkdir(self, *args, **kwargs):
        if self == parent and not parent.exists():
            os.mkdir(parent)  # the other process wins the race
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    assert create_run_dir(run) == [run]  # only what this run made; the shared parent is not its to remove
    assert run.is_dir()
