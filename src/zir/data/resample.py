"""Resampling a waveform between sample rates in torch: polyphase filtering with a windowed-sinc low-pass.

With the rates reduced by their greatest common divisor to `orig` and `new`, output sample j lies at input
time t = j * orig / new. Writing j = k * new + i, every output of phase i is the same filter slid by `orig`
input samples, so all of them come out of one strided `conv1d` with `new` kernels (one per phase),
whose outputs are interleaved. The filter is an ideal low-pass h(t) = 2 fc sinc(2 fc t) cut off at
fc = rolloff / 2 times the lower of the two rates (in cycles per input sample), shortened to
`zero_crossings` zero crossings on each side by a Hann window; its taps sum to about 1, so a constant
signal keeps its level. `rolloff` < 1 leaves room for the window's transition band below the new Nyquist
frequency, which is what keeps downsampling from aliasing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from zir.errors import ConfigError


@lru_cache(maxsize=16)
def _kernels(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """The (new, 1, L) float64 phase kernels and the left padding M they assume (orig, new reduced)."""
    fc = 0.5 * rolloff * min(1.0, new / orig)  # cycles per input sample
    half = zero_crossings / (2.0 * fc)  # the window's half-width in input samples
    pad = math.ceil(half)
    m = torch.arange(-pad, orig + pad, dtype=torch.float64)  # input offsets each phase may touch
    phase = torch.arange(new, dtype=torch.float64)[:, None] * orig / new
    t = phase - m[None, :]  # (new, L): the output's time minus each input's
    window = torch.where(t.abs() <= half, torch.cos(math.pi * t / (2 * half)) ** 2, torch.zeros_like(t))
    taps = 2 * fc * torch.sinc(2 * fc * t) * window
    return taps[:, None, :].contiguous(), pad


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int, *, zero_crossings: int = 16,
             rolloff: float = 0.945) -> torch.Tensor:
    """A waveform (..., T) at `orig_rate` -> (..., ceil(T * new / orig)) at `new_rate`, in the input's dtype."""
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ConfigError(f"resample {name}={rate!r}: expected a positive whole number of Hz")
    if not 0.0 < rolloff <= 1.0 or zero_crossings < 1:
        raise ConfigError(f"resample rolloff={rolloff}, zero_crossings={zero_crossings}: expected 0 < rolloff <= 1 and >= 1")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    taps, pad = _kernels(orig, new, zero_crossings, rolloff)
    shape, length = wave.shape[:-1], wave.shape[-1]
    x = wave.reshape(-1, 1, length)
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    # conv1d correlates: window k of the padded input starts at input k*orig - pad, where tap 0 (offset -pad) sits
    x = F.pad(x.to(dtype), (pad, pad + orig))
    out = F.conv1d(x, taps.to(dtype), stride=orig)  # (N, new, K): phase i of output block k
    out = out.transpose(1, 2).reshape(x.shape[0], -1)
    wanted = math.ceil(length * new / orig)
    return out[:, :wanted].reshape(*shape, wanted).to(wave.dtype)
