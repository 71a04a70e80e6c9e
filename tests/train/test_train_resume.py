"""Exact resume: a run killed mid-way (SIGKILL or SIGTERM) and resumed ends with an uninterrupted run's weights."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
import yaml

from helpers import IMPORT_FACTORY, PY, env, last_weights, metrics_rows, recipe
from zir.cli import main
from zir.config import from_dict
from zir.train import TrainingInterrupted, list_checkpoints, load_checkpoint, resume, train

STEPS = 10


def _recipe(**model):
    # drop path and a random augmentation: both the training RNG and the data position must come back
    raw = recipe(train__steps=STEPS, train__ckpt_every=3)
    raw["model"].update(drop_path=0.1, pipeline="light", **model)
    raw["data"]["options"]["n"] = 96  # 6 batches an epoch: the run crosses an epoch boundary
    return raw


def _losses(run):
    return [(int(r["step"]), r["loss"]) for r in metrics_rows(run)]


def _assert_same_run(run, reference):
    want, got = last_weights(reference), last_weights(run)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert _losses(run) == _losses(reference)  # rows after the checkpoint were replaced, none duplicated


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    train(from_dict(_recipe()), run, progress=False)
    return run


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, reference):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe(sleep=0.05)))
    run = tmp_path / "run"
    proc = subprocess.Popen([PY, "-m", "zir", "train", str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress", *IMPORT_FACTORY],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (run / "metrics.csv").exists() or sum(1 for _ in open(run / "metrics.csv")) <= 5:  # header + 5 steps
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - t0 < 90, "the run did not get going"
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=30)
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(run / "checkpoints")]
    assert steps and max(steps) < STEPS
    resume(run, progress=False)
    _assert_same_run(run, reference)


def test_sigterm_saves_exits_cleanly_and_resumes_to_the_same_weights(tmp_path, reference):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 6/10") as stop:
        # the signal arrives during step 6, the last of the first epoch, which also has a periodic checkpoint
        train(from_dict(_recipe(signal_at=5)), run, progress=False)
    assert stop.value.signum == signal.SIGTERM
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000003", "step_00000006"]
    assert load_checkpoint(run / "checkpoints" / "step_00000006")[1]["data"] == {"epoch": 0, "samples": 96, "batches": 6}
    assert yaml.safe_load((run / "status.json").read_text())["status"] == "interrupted"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["signal_at"] = None  # (the stand-in would signal again at its 5th call after the resume)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    resume(run, progress=False)
    _assert_same_run(run, reference)


def test_sigterm_on_the_command_line_exits_143_with_one_line(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe(signal_at=1)))
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "stopped by SIGTERM at step 2/10; checkpoint saved; continue with: zir train --resume" in err


def _shards(folder, n=48, per_shard=24):
    """Two tar shards of n labelled 32x32 PNGs."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for s in range(n // per_shard):
        with tarfile.open(folder / f"part-{s:06d}.tar", "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(i % 5).encode())):
                    info = tarfile.TarInfo(f"{s}_{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def test_a_run_on_shards_resumes_to_the_same_weights(tmp_path):
    # streams cannot seek: the resumed loader reads and drops the batches the checkpoint had consumed
    def raw(**model):
        r = recipe(train__steps=8, train__ckpt_every=3)
        r["model"].update(pipeline="light", **model)
        r["data"] = {"source": f"shards:{shards}", "batch_size": 8}  # 6 batches an epoch
        return r

    shards = _shards(tmp_path / "shards")
    train(from_dict(raw()), tmp_path / "ref", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(from_dict(raw(signal_at=6)), tmp_path / "run", progress=False)  # stops after step 7 (next epoch)
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    cfg["model"]["signal_at"] = None
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    resume(tmp_path / "run", progress=False)
    _assert_same_run(tmp_path / "run", tmp_path / "ref")
