"""Helpers shared by the test folders (importable as `helpers`: pytest puts tests/, the folder of the root
conftest.py, on sys.path): repository paths, tiny towers and batches, the CLI's one-line errors, a run's
metrics and weights, and a stand-in model for the engine's tests (a tiny ViT with a supervised CE objective)."""

from __future__ import annotations

import csv
import io
import os
import tarfile
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from zir.data import ViewPlan, make_loader
from zir.models import create_model, register_model_factory
from zir.train import list_checkpoints

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent  # the repository root
SRC = REPO / "src"
FIXTURES = TESTS / "fixtures"
SHARED = REPO.parent / "shared" / "data"  # the real data sets (cifar10, flickr8k, fsdd), when this machine has them

NANO = {"image": {"model": "vit_nano_patch4_32"}}  # `model.towers` of the smallest image-only model
TEXT_NANO = {"model": "text_nano", "vocab_size": 435, "context_length": 32}  # a text tower for the shapes tokenizer


def tiny_vit(num_classes: int = 10, **kw) -> nn.Module:
    """vit_nano_patch4_32 with the same weights every call (seed 0), in eval mode."""
    torch.manual_seed(0)
    return create_model("vit_nano_patch4_32", num_classes=num_classes, **kw).eval()


def random_images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """b RGB images of h x w, the same for the same seed."""
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def first_batch(model, source, batch_size: int = 8, tokenizer=None):
    """The first batch of `source` in order, with the views `model` asks for."""
    return next(iter(make_loader(source, model.view_plan(), batch_size, shuffle=False, tokenizer=tokenizer)))


def tone(freq: float, seconds: float = 0.5, rate: int = 8000, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """A sine at `freq` Hz with a little seeded noise, (T,) float in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t) + np.random.default_rng(seed).normal(0, 0.01, t.shape)


def tone_folder(root: Path, freqs: dict | None = None, per_class: int = 4, rate: int = 8000) -> Path:
    """root/CLASS/i.wav: 16-bit tones, each class at its own pitch (`freqs`: class -> Hz), lengths varying."""
    from zir.data.wav import encode_wav

    for c, (name, hz) in enumerate((freqs or {"low": 300.0, "high": 1500.0}).items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            wave = tone(hz * (1 + 0.03 * i), 0.2 + 0.1 * i, rate, seed=10 * c + i)
            (root / name / f"{i}.wav").write_bytes(encode_wav(wave, rate))
    return root


def write_shard(path: Path, samples: list[dict]) -> Path:
    """A tar shard of samples {key, ext: bytes, ...}: KEY.ext members in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for s in samples:
            for ext, data in s.items():
                if ext != "key":
                    info = tarfile.TarInfo(f"{s['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def one_line_error(capsys) -> str:
    """The CLI's error message: one stderr line `zir: error: ...` without a traceback; returns what follows."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("zir: error: ") and "\n" not in err, err
    return err[len("zir: error: "):]


def metrics_rows(run: Path) -> list[dict]:
    """The rows of a run's metrics.csv, as strings."""
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def last_weights(run: Path) -> dict:
    """The model weights of a run's newest checkpoint."""
    return load_file(str(list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))


# -- the stand-in model: registered as the factory `standin`, which `recipe()` names --------------------------
@dataclass
class Output:
    """Follows zir.model.ModelOutput."""

    loss: torch.Tensor
    terms: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class StandIn(nn.Module):
    """Image tower + linear classifier; `nan_at` makes the loss NaN at those steps (for the guard), and after
    `poison_after` applied steps the head's weights turn NaN (as an overflowing update would)."""

    def __init__(self, model: str = "vit_nano_patch4_32", drop_path: float = 0.0, pipeline: str = "none",
                 nan_at: tuple = (), classes: int = 10, sleep: float = 0.0, signal_at: int | None = None,
                 poison_after: int | None = None):
        super().__init__()
        self.tower = create_model(model, num_classes=0, drop_path_rate=drop_path)
        self.head = nn.Linear(self.tower.embed_dim, classes)
        self.pipeline, self.nan_at, self.sleep, self.signal_at = pipeline, set(nan_at), sleep, signal_at
        self.poison_after = poison_after
        self.calls = 0  # forward calls in this process
        self.positions: list[tuple[int, int]] = []  # what after_step was told, in this process
        self.register_buffer("after_calls", torch.zeros((), dtype=torch.long))

    def view_plan(self) -> ViewPlan:
        return ViewPlan(global_views=1, pipeline=self.pipeline, size=32, patch_size=4)

    def forward(self, batch) -> Output:
        x = batch.views["global_0"]
        if self.sleep:  # slows a subprocess run down enough to be killed mid-way
            time.sleep(self.sleep)
        logits = self.head(self.tower.pool(self.tower.forward_tokens(x)))
        loss = F.cross_entropy(logits, batch.labels)
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        if self.calls == self.signal_at:  # as if the scheduler sent SIGTERM during this step
            signal.raise_signal(signal.SIGTERM)
        self.calls += 1
        acc = (logits.argmax(1) == batch.labels).float().mean()
        return Output(loss, {"ce_loss": loss.detach()}, {"acc": float(acc)})

    def after_step(self, step: int, total_steps: int) -> None:
        self.after_calls += 1
        self.positions.append((step, total_steps))
        if self.after_calls.item() == self.poison_after:
            with torch.no_grad():
                self.head.weight.fill_(float("nan"))

    def param_groups(self, weight_decay, layer_decay=None, base_lr=None):
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        rest = [p for n, p in self.named_parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        for g in groups:
            g["lr_scale"] = 1.0
            if base_lr is not None:
                g["lr"] = base_lr
        return groups


def build(section: dict) -> nn.Module:
    """The factory named in test recipes: model.factory=standin (registered here; a subprocess passes
    --import-factory helpers:build, since zir never imports code a recipe names)."""
    return StandIn(**section)


register_model_factory("standin", build)
IMPORT_FACTORY = ["--import-factory", "helpers:build"]  # for `zir train` in a subprocess


def recipe(**over) -> dict:
    """A tiny recipe dict on shapes with the stand-in model."""
    raw = {
        "name": "standin",
        "model": {"factory": "standin"},
        "data": {"source": "shapes", "batch_size": 16, "options": {"n": 256, "size": 32}},
        "optim": {"lr": 1e-3, "warmup": 0.1},
        "train": {"steps": 6, "ckpt_every": 2, "threads": 1, "log_every": 1},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        raw[section][name] = value
    return raw


def env() -> dict:
    """Environment for subprocesses that must import zir and these helpers, single-threaded."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


PY = sys.executable


def print_seed_spread(measure, seeds: str, names: tuple[str, str]) -> None:
    """A learning test's `__main__`: for each seed in "0,1,2", `measure(run_dir, seed)` -> (trained, random init),
    printed as one JSON line with the CPU seconds it took; the spread its thresholds are set from."""
    import json
    import tempfile

    torch.set_num_threads(1)
    for seed in (int(s) for s in seeds.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            started = time.process_time()
            trained, random_init = measure(Path(folder) / "run", seed)
            print(json.dumps({"seed": seed, names[0]: trained, names[1]: random_init,
                              "cpu_s": round(time.process_time() - started)}), flush=True)
