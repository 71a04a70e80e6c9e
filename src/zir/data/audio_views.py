"""Audio views: waveforms -> fixed-duration, normalised, augmented log-mel spectrograms (B, 1, n_mels, frames).

A view reads `Spectrogram.samples` samples of each recording: with a time crop (`crop`), a random window of a
longer recording and a random place in the window for a shorter one (the rest silence); without, the
start of the recording, padded with silence at the end (as AST reads its first 10 s). The log-mel is
normalised with the data set's mean and standard deviation (`ViewPlan.audio_mean`, `audio_std`; measure them
with `spectrogram_stats()`), then SpecAugment (Park et al. 2019) hides `freq_masks` bands of up to
`freq_width` of the mel bins and `time_masks` spans of up to `time_width` of the frames, each set to 0, the
data set's mean. Like the image transforms, the same waveforms and seed give the same view in any process.

Mixing (`mix`, the plan's `audio_mix`; off by default): after the time crop each clip gets another clip of the
batch as background, `(1 - r) * clip + r * other` with `r` drawn uniformly in [0, mix] per clip, `mix` < 0.5
so the clip stays dominant and its label and captions stay true (BYOL-A's background mixing, AST's waveform
mixup without mixing the labels).

Pipelines: `none` (evaluation), `crop` (time crops: Audio-MAE and audio-text pretraining), `specaugment`
(time crops and two masks of up to 15% on each axis; AST fine-tunes with 48 of 128 bins and 192 of 1024 frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zir.data.spectrogram import Spectrogram, log_mel
from zir.errors import ConfigError


@dataclass(frozen=True)
class AudioAugment:
    """One audio view's augmentation: a time crop and SpecAugment's masks (widths as fractions of the axis)."""

    crop: bool = False
    freq_masks: int = 0
    freq_width: float = 0.0
    time_masks: int = 0
    time_width: float = 0.0
    mix: float = 0.0  # the largest share of another clip of the batch mixed in as background (0: none)


AUDIO_PIPELINES = {
    "none": AudioAugment(),
    "crop": AudioAugment(crop=True),
    "specaugment": AudioAugment(crop=True, freq_masks=2, freq_width=0.15, time_masks=2, time_width=0.15),
}
AUDIO_PIPELINE_ORDER = ("specaugment", "crop", "none")  # strongest first: a shared view gets the strongest asked


def check_audio_pipeline(name: str) -> AudioAugment:
    """The augmentation of a pipeline name, or a ConfigError naming the field and the choices."""
    if name not in AUDIO_PIPELINES:
        raise ConfigError(f"view plan field audio_pipeline={name!r}: expected one of {', '.join(AUDIO_PIPELINES)}")
    return AUDIO_PIPELINES[name]


def fixed_length(waves: list[torch.Tensor], samples: int, crop: bool, rng: np.random.Generator) -> torch.Tensor:
    """Each waveform cut or padded (with silence) to `samples`: (B, samples) float32."""
    out = torch.zeros(len(waves), samples)
    for i, w in enumerate(waves):
        n = int(w.shape[0])
        if n >= samples:
            start = int(rng.integers(0, n - samples + 1)) if crop else 0
            out[i] = w[start:start + samples]
        else:
            place = int(rng.integers(0, samples - n + 1)) if crop else 0
            out[i, place:place + n] = w
    return out


def check_mix(mix) -> float:
    """The plan's `audio_mix` as a float in [0, 0.5), or a ConfigError naming the field."""
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0 <= mix < 0.5:
        raise ConfigError(f"view plan field audio_mix={mix!r}: expected a number in [0, 0.5) (the most background "
                          "share; below one half the clip stays dominant)")
    return float(mix)


def draw_mix(rng: np.random.Generator, batch: int, most: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each clip, another clip of the batch (never itself) and its share in [0, most]: (B,) long, (B,) float."""
    offsets = rng.integers(1, batch, size=batch) if batch > 1 else np.zeros(batch, dtype=np.int64)
    partner = torch.as_tensor((np.arange(batch) + offsets) % max(batch, 1), dtype=torch.long)
    return partner, torch.as_tensor(rng.uniform(0.0, most, size=batch), dtype=torch.float32)


def mix_clips(waves: torch.Tensor, partner: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """(B, T) clips each mixed with clip `partner[i]` as background: (1 - share) * clip + share * partner's."""
    share = share.to(waves.dtype)[:, None]
    return (1 - share) * waves + share * waves[partner]


def _spans(rng: np.random.Generator, batch: int, count: int, width: float, length: int) -> torch.Tensor:
    """(B, length) bool: `count` spans per sample, each of 0 .. floor(width * length) positions."""
    hidden = torch.zeros(batch, length, dtype=torch.bool)
    most = int(width * length)
    for b in range(batch):
        for _ in range(count):
            size = int(rng.integers(0, most + 1))
            start = int(rng.integers(0, length - size + 1))
            hidden[b, start:start + size] = True
    return hidden


def audio_view(waves: list[torch.Tensor], spec: Spectrogram, augment: AudioAugment, mean: float, std: float,
               seed: int) -> torch.Tensor:
    """Waveforms at `spec.sample_rate` -> (B, 1, n_mels, frames): fixed length, log-mel, normalised, masked."""
    rng = np.random.default_rng(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    clips = fixed_length(waves, spec.samples, augment.crop, rng)
    if augment.mix and len(waves) > 1:
        clips = mix_clips(clips, *draw_mix(rng, len(waves), augment.mix))
    mel = (log_mel(clips, spec) - mean) / std
    if augment.freq_masks:
        mel = mel.masked_fill(_spans(rng, len(waves), augment.freq_masks, augment.freq_width, spec.n_mels)[:, :, None], 0.0)
    if augment.time_masks:
        mel = mel.masked_fill(_spans(rng, len(waves), augment.time_masks, augment.time_width, spec.frames)[:, None, :], 0.0)
    return mel[:, None]


def spectrogram_stats(waves, spec: Spectrogram) -> tuple[float, float]:
    """The mean and standard deviation of the log-mel values of these waveforms (each read as an evaluation view
    reads it: its start, padded with silence), for `ViewPlan.audio_mean` and `audio_std`."""
    total, squares, count = 0.0, 0.0, 0
    batch: list[torch.Tensor] = []
    rng = np.random.default_rng(0)

    def flush() -> None:
        nonlocal total, squares, count
        mel = log_mel(fixed_length(batch, spec.samples, False, rng), spec).double()
        total, squares, count = total + float(mel.sum()), squares + float((mel ** 2).sum()), count + mel.numel()
        batch.clear()

    for w in waves:
        batch.append(torch.as_tensor(w, dtype=torch.float32))
        if len(batch) == 256:
            flush()
    if batch:
        flush()
    if not count:
        raise ConfigError("spectrogram_stats: no waveform to measure")
    mean = total / count
    return mean, max(squares / count - mean ** 2, 0.0) ** 0.5
