"""What an audio tower hears in one recording: its log-mel spectrogram with attention rollout over it.

A `.wav` given to `zir explain` is read exactly as the run's evaluation views read a recording
(`extraction_plan`): decoded to mono, resampled to the tower's rate, cut or padded from its start to the
front end's duration, log-mel, normalised with the run's `audio_mean`/`audio_std`. Pictures put low
frequencies at the bottom and time left to right, as spectrograms are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zir.data.audio_views import AUDIO_PIPELINES, audio_view
from zir.data.plan import ViewPlan
from zir.data.resample import resample
from zir.data.sources import BadSample
from zir.data.audio_decode import decode_audio
from zir.errors import ZirError
from zir.eval.attention_maps import attention_rollout
from zir.eval.pictures import colourise, save_panels, upsample_map


def spectrogram_plan(model: torch.nn.Module, tower: torch.nn.Module, config: dict) -> ViewPlan:
    """The view plan of the run's unaugmented audio view: the tower's front end and the run's statistics."""
    from zir.eval.splits import extraction_plan

    spec, _ = extraction_plan(model, config, tower)
    return ViewPlan.from_dict(spec)


def read_wav(path: str | os.PathLike, plan: ViewPlan) -> torch.Tensor:
    """A WAV (or FLAC, OGG) file as a (1, 1, n_mels, frames) normalised log-mel, or a one-line ZirError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ZirError(f"audio {path} does not exist")
    try:
        wave, rate = decode_audio(path, str(path))
    except BadSample as err:
        raise ZirError(f"audio {path} cannot be used: {err.reason}") from None
    spec = plan.spectrogram
    samples = resample(torch.from_numpy(wave), rate, spec.sample_rate)
    return audio_view([samples], spec, AUDIO_PIPELINES["none"], plan.audio_mean, plan.audio_std, seed=0)


def spectrogram_panel(mel: torch.Tensor) -> np.ndarray:
    """(1, n_mels, frames) log-mel -> (n_mels, frames, 3) uint8 grey, low frequencies at the bottom."""
    m = mel[0].detach().float()
    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
    grey = (m.flip(0).numpy() * 255).round().astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def overlay(mel: torch.Tensor, grid_map: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(the map alone, the map blended over the spectrogram), both (n_mels, frames, 3) uint8, low bins at the bottom."""
    heat = colourise(upsample_map(grid_map, tuple(mel.shape[-2:]))[::-1])
    blend = (0.45 * spectrogram_panel(mel).astype(np.float32) + 0.55 * heat.astype(np.float32)).astype(np.uint8)
    return heat, blend


def explain_spectrograms(tower: torch.nn.Module, mels: torch.Tensor, out_png: str | os.PathLike,
                         titles: list[str] | None = None) -> dict:
    """Write a PNG with a row per spectrogram (B, 1, n_mels, frames): the spectrogram, rollout, rollout over it."""
    maps = attention_rollout(tower, mels)
    rows = []
    for i in range(mels.shape[0]):
        heat, blend = overlay(mels[i], maps[i])
        name = titles[i] if titles else "spectrogram"
        rows.append([(name, spectrogram_panel(mels[i])), ("rollout", heat), ("rollout over it", blend)])
    path = save_panels(rows, out_png, scale=3)
    return {"png": str(path), "grid": list(maps.shape[1:]), "maps": maps}
