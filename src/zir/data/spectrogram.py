"""Log-mel spectrograms in torch (no torchaudio): the STFT by `torch.stft`, a mel filterbank written from the formula.

`Spectrogram` holds an audio tower's front end: the sample rate, the STFT (window `win_length`, zero-padded to
`n_fft`, a Hann window, hop `hop_length`), `n_mels` triangular filters and the fixed number of `frames` a tower
reads. A waveform of `samples` = (frames - 1) * hop_length samples gives exactly `frames` frames: the STFT is
centred (each frame's middle on a multiple of the hop) with zeros beyond both ends, so a frame past the
recording reads silence. The power spectrum |STFT|^2 goes through the filterbank, then log(mel + offset),
natural log; `offset` (1e-6) keeps silence finite (log 1e-6 = -13.8).

Mel scales: `htk` is mel = 2595 log10(1 + f / 700) (HTK, Kaldi, AST); `slaney` is linear below 1 kHz
(f / (200 / 3)) and logarithmic above it, 27 steps per factor 6.4 (Slaney's Auditory Toolbox, librosa's
default). Filter m rises linearly from mel point m to m + 1 and falls to m + 2, the n_mels + 2 points equally
spaced on the mel scale from `f_min` to `f_max`; `norm: slaney` scales each filter to unit area
(2 / (its width in Hz)), so wide high filters do not dominate.

The published AST front end is 16 kHz, a 25 ms window every 10 ms (400 / 160 samples), 128 HTK mel bins
and 1024 frames (10.24 s).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch

from zir.errors import ConfigError

MEL_SCALES = ("htk", "slaney")


def hz_to_mel(f, scale: str = "htk"):
    """Frequencies in Hz (a float or a numpy array) -> mels on the HTK or Slaney scale."""
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    linear = f / (200.0 / 3)
    return np.where(f < 1000.0, linear, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (math.log(6.4) / 27.0))


def mel_to_hz(m, scale: str = "htk"):
    """The inverse of `hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m < 15.0, m * (200.0 / 3), 1000.0 * np.exp((m - 15.0) * (math.log(6.4) / 27.0)))


@dataclass(frozen=True)
class Spectrogram:
    """An audio front end: waveform at `sample_rate` -> log-mel (n_mels, frames); see the module docstring."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    win_length: int | None = None  # None: n_fft
    n_mels: int = 128
    frames: int = 1024
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    mel_scale: str = "htk"
    norm: str | None = None  # None or slaney (unit-area filters)
    offset: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"spectrogram {name}={value!r}: expected a positive whole number")
        win = self.win_length
        if win is not None and (isinstance(win, bool) or not isinstance(win, int) or not 1 <= win <= self.n_fft):
            raise ConfigError(f"spectrogram win_length={win!r}: expected a whole number from 1 to n_fft={self.n_fft}")
        if self.mel_scale not in MEL_SCALES:
            raise ConfigError(f"spectrogram mel_scale={self.mel_scale!r}: expected htk or slaney")
        if self.norm not in (None, "slaney"):
            raise ConfigError(f"spectrogram norm={self.norm!r}: expected null or slaney")
        if not 0.0 <= self.f_min < self.top <= self.sample_rate / 2:
            raise ConfigError(f"spectrogram f_min={self.f_min}, f_max={self.f_max}: expected 0 <= f_min < f_max <= "
                              f"{self.sample_rate / 2:g} (half the sample rate)")
        if not self.offset > 0:
            raise ConfigError(f"spectrogram offset={self.offset!r}: expected a positive number (log(mel + offset))")

    @classmethod
    def from_dict(cls, spec: "dict | Spectrogram | None") -> "Spectrogram":
        """Settings from a recipe mapping (unknown keys are a ConfigError); a Spectrogram is returned as it is."""
        if isinstance(spec, Spectrogram):
            return spec
        spec = dict(spec or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"spectrogram key {unknown[0]!r}: expected some of {', '.join(sorted(known))}")
        return cls(**spec)

    def to_dict(self) -> dict:
        """Plain values, as a recipe writes them."""
        return asdict(self)

    @property
    def top(self) -> float:
        """The highest frequency the filters reach: f_max, or half the sample rate."""
        return float(self.f_max) if self.f_max is not None else self.sample_rate / 2

    @property
    def samples(self) -> int:
        """Waveform samples that make exactly `frames` centred frames."""
        return (self.frames - 1) * self.hop_length

    @property
    def seconds(self) -> float:
        """The duration a tower reads."""
        return self.samples / self.sample_rate


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, f_min: float, f_max: float,
                   scale: str = "htk", norm: str | None = None) -> torch.Tensor:
    """(n_freqs, n_mels) float32 triangular filters over FFT bins 0 .. sample_rate / 2; ConfigError if one is empty."""
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        bank *= 2.0 / (upper - lower)
    empty = np.flatnonzero(bank.max(axis=0) == 0)
    if empty.size:
        raise ConfigError(f"spectrogram: mel filter {int(empty[0])} of n_mels={n_mels} covers no FFT bin of "
                          f"{n_freqs} ({sample_rate} Hz); use fewer mel bins or a larger n_fft")
    return torch.from_numpy(bank.astype(np.float32))


@lru_cache(maxsize=8)
def _tables(spec: Spectrogram) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hann window (win_length,) and the filterbank (n_fft // 2 + 1, n_mels) of a front end."""
    window = torch.hann_window(spec.win_length or spec.n_fft, periodic=True, dtype=torch.float64)
    bank = mel_filterbank(spec.n_fft // 2 + 1, spec.sample_rate, spec.n_mels, spec.f_min, spec.top,
                          spec.mel_scale, spec.norm)
    return window, bank


def log_mel(wave: torch.Tensor, spec: Spectrogram) -> torch.Tensor:
    """Waveforms (B, T) or (T,) at `spec.sample_rate` -> log-mel (B, n_mels, 1 + T // hop) in float32 (float64 in)."""
    dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
    window, bank = _tables(spec)
    stft = torch.stft(wave.to(dtype), spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length or spec.n_fft,
                      window=window.to(dtype), center=True, pad_mode="constant", return_complex=True)
    power = stft.real ** 2 + stft.imag ** 2  # (B, n_fft // 2 + 1, frames)
    mel = torch.einsum("...ft,fm->...mt", power, bank.to(dtype))
    return torch.log(mel + spec.offset)
