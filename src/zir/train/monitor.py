"""The k-NN monitor (as solo-learn and lightly keep one): every `train.monitor_every` steps, the weighted k-NN
top-1 of the image tower's (in a model without one, the audio tower's) pooled features on a small labelled
hold-out, logged as `knn_top1`.

Cheap by construction: `train.monitor_samples` images, half from the data's fit split (the bank) and half from
its held-out split (the queries), are decoded once when the run starts, without augmentation, and kept in
memory; a measurement is one forward over them and one k-NN. It scores what `zir eval --tasks knn --limit
N/2` scores on the checkpoint of the same step: the same samples (`run_held_out()`), the same features (the
tower's `pool(forward_tokens(x))` in eval mode, in fp32) and the same `evaluate_knn()`, which lives in
`zir.scoring` so that `train` need not import `eval`. It runs on rank 0 only (the other ranks go on to the next
step, whose first collective waits for rank 0) and leaves every random state and module mode as it found
them, so a monitored run draws, and trains, exactly as an unmonitored one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from zir.config import Config
from zir.data import ViewPlan, make_loader
from zir.data.held_out import run_held_out
from zir.errors import ConfigError, ZirError
from zir.scoring.knn import evaluate_knn

__all__ = ["KNN_COLUMN", "KnnMonitor", "knn_monitor"]

KNN_COLUMN = "knn_top1"  # the metrics.csv column: top-1 in percent, on monitored steps only
BATCH = 256  # images per forward, as `zir eval` batches them


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """`module` in eval mode without gradients; after, each submodule's own mode back (a frozen part stays frozen)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


class KnnMonitor:
    """The decoded bank and queries of one run and the tower they go through; `measure()` is one k-NN top-1."""

    def __init__(self, tower: nn.Module, bank: tuple[torch.Tensor, torch.Tensor],
                 queries: tuple[torch.Tensor, torch.Tensor], every: int, k: int, temperature: float,
                 device: torch.device) -> None:
        """`bank` and `queries` are (inputs (N, C, H, W), labels (N,)) on the CPU, normalised as the run's data."""
        self.tower, self.bank, self.queries = tower, bank, queries
        self.every, self.k, self.temperature, self.device = every, k, temperature, device

    def due(self, step: int) -> bool:
        """Whether `step` is a monitored one (every `every`-th)."""
        return step % self.every == 0

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) pooled features, BATCH images at a time, in fp32 (no autocast), on the CPU."""
        out = [self.tower.pool(self.tower.forward_tokens(images[i:i + BATCH].to(self.device))).float().cpu()
               for i in range(0, len(images), BATCH)]
        return torch.cat(out)

    def measure(self) -> dict[str, float]:
        """{KNN_COLUMN: top-1 in percent} of the tower's current weights."""
        with evaluating(self.tower):
            bank = self._features(self.bank[0])
            queries = self._features(self.queries[0])
        result = evaluate_knn(bank, self.bank[1], queries, self.queries[1], k=self.k, temperature=self.temperature)
        return {KNN_COLUMN: result["top1"]}


def monitored_tower(model: nn.Module, every: int) -> nn.Module:
    """The tower `zir eval` scores: the one named `image`, else the first of image modality, else the audio tower
    (`audio`, else the first of audio modality)."""
    towers = model.towers
    for modality in ("image", "audio"):
        if modality in towers and towers[modality].modality == modality:
            return towers[modality]
        for tower in towers.values():
            if tower.modality == modality:
                return tower
    raise ConfigError(f"train.monitor_every={every}: the model has no image or audio tower to monitor "
                      f"(towers: {', '.join(towers)})")


def decoding_plan(tower: nn.Module, plan: ViewPlan) -> tuple[dict, str]:
    """The unaugmented view `zir eval` extracts features from, normalised as the run's `plan`, and its name."""
    if tower.modality == "audio":
        return {"global": 0, "audio": 1, "audio_pipeline": "none", "spectrogram": plan.spectrogram,
                "audio_patch_size": plan.audio_patch_size, "audio_mean": plan.audio_mean,
                "audio_std": plan.audio_std}, "audio_0"
    return {"global": 1, "pipeline": "none", "size": int(tower.img_size[0]), "mean": tuple(plan.mean),
            "std": tuple(plan.std)}, "global_0"


def _decoded(source, limit: int, plan: tuple[dict, str], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` inputs of `source` (N, C, H, W), as `zir eval` decodes them, and their labels."""
    (spec, view), images, labels, seen = plan, [], [], 0
    for batch in make_loader(source, spec, BATCH, shuffle=False, drop_last=False):
        take = min(len(batch), limit - seen)
        images.append(batch.views[view][:take])
        labels.append(batch.labels[:take])
        seen += take
        if seen >= limit:
            break
    labels = torch.cat(labels)
    if bool((labels < 0).any()):
        raise ConfigError(f"{where}: some samples have no class label, which a k-NN monitor needs")
    return torch.cat(images), labels


def knn_monitor(model: nn.Module, cfg: Config, plan: ViewPlan, device: torch.device, *, main: bool,
                sharded: bool) -> KnnMonitor | None:
    """The run's monitor (None when `train.monitor_every` is 0, and on ranks other than 0, after the checks),
    or a one-line ConfigError for settings it cannot follow; inputs are normalised as the run's `plan` does."""
    t, d = cfg.train, cfg.data
    if not t.monitor_every:
        return None
    if sharded:
        raise ConfigError("train.monitor_every with train.strategy='fsdp' is not available yet (rank 0 alone cannot "
                          "run a sharded tower); use ddp, or set train.monitor_every=0")
    tower = monitored_tower(model, t.monitor_every)
    field = f"train.monitor_data={t.monitor_data!r}" if t.monitor_data else f"train.monitor_every={t.monitor_every}"
    try:
        parts = run_held_out(t.monitor_data, {"source": d.source, "options": d.options, "data_root": d.data_root},
                             limit=t.monitor_samples // 2)
    except ZirError as err:
        raise ConfigError(f"{field}: {err}") from None
    hint = "; name a labelled source, e.g. train.monitor_data=shapes" if not t.monitor_data else ""
    if parts.fit is None:
        raise ConfigError(f"{field}: {parts.name} has no split to draw the k-NN bank from (a stream without splits){hint}")
    if not parts.fit.classes or not parts.test.classes:
        raise ConfigError(f"{field}: {parts.name} has no class labels, which a k-NN monitor needs{hint}")
    if not main:
        return None
    decoding, limit = decoding_plan(tower, plan), t.monitor_samples // 2
    bank = _decoded(parts.fit, limit, decoding, f"{field} ({parts.name}:{parts.fit_split})")
    queries = _decoded(parts.test, limit, decoding, f"{field} ({parts.name}:{parts.test_split})")
    if t.monitor_k > len(bank[1]):
        raise ConfigError(f"train.monitor_k={t.monitor_k}: larger than the {len(bank[1])} samples of the k-NN bank "
                          f"({parts.name}:{parts.fit_split})")
    return KnnMonitor(tower, bank, queries, t.monitor_every, t.monitor_k, t.monitor_temperature, device)
