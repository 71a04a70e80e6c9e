"""DDP and FSDP on CPU: two gloo processes at the same global batch follow one process's losses and weights."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml

from helpers import IMPORT_FACTORY, PY, env, last_weights, metrics_rows, recipe
from zir.config import from_dict
from zir.train import train


def _recipe(**train_over):
    raw = recipe(train__steps=4, train__ckpt_every=2, **{f"train__{k}": v for k, v in train_over.items()})
    raw["model"]["pipeline"] = "none"  # views that do not depend on which samples share a batch
    raw["data"]["batch_size"] = 16
    return raw


def _losses(run):
    return [float(r["loss"]) for r in metrics_rows(run)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    train(from_dict(_recipe()), run, progress=False)
    return run


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(tmp_path, single, strategy):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe(strategy=strategy)))
    run = tmp_path / "run"
    done = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zir", "train",
                           str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress", *IMPORT_FACTORY],
                          env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    status = yaml.safe_load((run / "status.json").read_text())
    assert status["world_size"] == 2 and status["status"] == "finished"
    assert _losses(run) == pytest.approx(_losses(single), rel=1e-5)
    one, two = last_weights(single), last_weights(run)
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-4), (key, (one[key] - two[key]).abs().max())
    assert done.stdout.count("Run standin finished") == 1  # rank 0 alone reports


def test_gradient_accumulation_matches_the_full_batch(tmp_path, single):
    train(from_dict(_recipe(accum_steps=2)), tmp_path / "run", progress=False)
    assert _losses(tmp_path / "run") == pytest.approx(_losses(single), rel=1e-5)
    one, acc = last_weights(single), last_weights(tmp_path / "run")
    for key in one:
        assert torch.allclose(one[key], acc[key], atol=1e-5), key
