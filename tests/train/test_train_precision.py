"""`train.precision: auto`: bf16 where the processor has it natively, fp32 elsewhere, chosen once per run."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import recipe
from zir.config import from_dict
from zir.errors import ConfigError
from zir.train import checkpoint as ckpt
from zir.train import precision, resume, train

CPU = torch.device("cpu")


def test_an_explicit_precision_is_kept_and_auto_follows_the_hardware(monkeypatch):
    assert precision.resolve_precision("fp32", CPU) == "fp32"
    assert precision.resolve_precision("bf16", CPU, recorded="fp32") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_precision("auto", CPU) == "fp32"
    assert precision.resolve_precision("auto", CPU, recorded="bf16") == "bf16"  # a resumed run keeps its choice


def test_native_bf16_reads_the_cpu_probes(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.native_bf16(CPU) is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16(CPU) is True
    assert precision.native_bf16(torch.device("meta")) is False


def test_auto_is_a_config_value_and_others_are_refused():
    assert from_dict(recipe(train__precision="auto")).train.precision == "auto"
    with pytest.raises(ConfigError, match="train.precision"):
        from_dict(recipe(train__precision="fp8"))


def test_an_auto_run_records_its_precision_and_a_resume_elsewhere_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)  # started on a bf16 machine
    run = tmp_path / "run"
    train(from_dict(recipe(train__precision="auto", train__steps=2, train__ckpt_every=1)), run, progress=False)
    assert json.loads((run / "status.json").read_text())["precision"] == "bf16"
    _, (_, state, _) = ckpt.latest_checkpoint(run / "checkpoints")
    assert state["precision"] == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # resumed on one without
    resume(run, ["train.steps=3"], progress=False)
    assert json.loads((run / "status.json").read_text())["precision"] == "bf16"
    assert "on cpu, bf16" in (run / "train.log").read_text()
