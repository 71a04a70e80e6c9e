"""Audio input: WAV decoding (8/16/24/32-bit PCM, stereo to mono), bad WAVs as counted BadSamples, resampling,
and log-mel spectrograms against a reference computed here in numpy (its own DFT and filterbank formula)."""

from __future__ import annotations

import io
import math
import struct
import wave

import numpy as np
import pytest
import torch

from zir.data.resample import resample
from zir.data.sources import BadSample
from zir.data.spectrogram import Spectrogram, log_mel, mel_filterbank
from zir.data.wav import decode_wav, encode_wav
from zir.errors import ConfigError


def raw_wav(frames: bytes, width: int, channels: int = 1, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(frames)
    return out.getvalue()


# -- WAV decoding ------------------------------------------------------------------------------------------
def test_each_pcm_width_decodes_to_its_full_scale_fraction():
    assert decode_wav(raw_wav(bytes([128, 255, 0, 192]), 1), "k")[0].tolist() == [0.0, 127 / 128, -1.0, 0.5]
    ints = [0, 16384, -32768, 32767]
    got, rate = decode_wav(raw_wav(struct.pack("<4h", *ints), 2, rate=16000), "k")
    assert rate == 16000 and got.dtype == np.float32 and got.tolist() == [v / 32768 for v in ints]
    three = [0, 2**22, -(2**23), 2**23 - 1, -1]
    packed = b"".join((v & 0xFFFFFF).to_bytes(3, "little") for v in three)
    assert np.allclose(decode_wav(raw_wav(packed, 3), "k")[0], [v / 2**23 for v in three], atol=1e-7)
    four = [0, 2**30, -(2**31), -1]
    assert np.allclose(decode_wav(raw_wav(struct.pack("<4i", *four), 4), "k")[0], [v / 2**31 for v in four], atol=1e-7)


def test_stereo_is_averaged_to_mono_and_noted():
    notes: list[str] = []
    got, _ = decode_wav(raw_wav(struct.pack("<4h", 16384, 0, -8192, -8192), 2, channels=2), "k", notes)
    assert got.tolist() == [0.25, -0.25] and notes == ["2-channel audio mixed to mono"]


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_a_written_tone_reads_back_within_one_quantisation_step(width, tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
    path = tmp_path / "tone.wav"
    path.write_bytes(encode_wav(tone, 8000, width))
    got, rate = decode_wav(path, "tone")
    step = 1.0 / {1: 128, 2: 32768, 3: 2**23, 4: 2**31}[width]
    assert rate == 8000 and np.abs(got - tone).max() <= max(step, 3e-8)  # float32 holds 24 bits


BAD = {
    "not a WAV file": lambda good: b"GIF89a" + good[6:],
    "truncated WAV": lambda good: good[: len(good) - 100],
    "truncated WAV header": lambda good: good[:30],
    "silent audio": lambda good: raw_wav(bytes(1600), 2),
    "empty audio": lambda good: raw_wav(b"", 2),
    "WAV encoding not integer PCM (unknown format: 3)": lambda good: good[:20] + struct.pack("<H", 3) + good[22:],
}


@pytest.mark.parametrize("reason", list(BAD))
def test_bad_audio_is_a_bad_sample_with_a_stable_reason(reason):
    good = encode_wav(0.5 * np.sin(np.arange(800) / 3), 8000)
    with pytest.raises(BadSample) as err:
        decode_wav(BAD[reason](good), "key")
    assert err.value.key == "key" and err.value.reason == reason


def test_a_header_declaring_hours_is_refused_before_its_frames_are_read():
    good = encode_wav(0.5 * np.sin(np.arange(8000) / 3), 8000)
    with pytest.raises(BadSample, match="audio over 0.5 seconds"):
        decode_wav(good, "k", max_seconds=0.5)
    with pytest.raises(BadSample, match="missing file"):
        decode_wav("/nonexistent/x.wav", "k")


# -- resampling ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orig,new", [(8000, 16000), (16000, 8000), (44100, 16000), (8000, 22050)])
def test_resampling_a_tone_matches_the_tone_at_the_new_rate(orig, new):
    x = torch.sin(2 * math.pi * 440 * torch.arange(orig, dtype=torch.float64) / orig)
    y = resample(x, orig, new)
    ref = torch.sin(2 * math.pi * 440 * torch.arange(new, dtype=torch.float64) / new)
    inner = slice(new // 20, -new // 20)  # the edges see the zeros beyond the recording
    assert y.shape == (new,) and float((y - ref)[inner].abs().max()) < 5e-4


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    x = torch.sin(2 * math.pi * 6000 * torch.arange(16000) / 16000)  # above 4 kHz, the new Nyquist frequency
    assert float(resample(x, 16000, 8000)[400:-400].abs().max()) < 0.01
    assert resample(x, 16000, 16000) is x
    assert resample(torch.ones(2, 3, 800), 8000, 16000)[..., 100:-100].sub(1).abs().max() < 1e-3  # level kept


# -- log-mel against numpy -----------------------------------------------------------------------------------
def numpy_log_mel(x: np.ndarray, rate: int, n_fft: int, win: int, hop: int, n_mels: int, f_min: float, f_max: float,
                  slaney: bool) -> np.ndarray:
    """The same front end written out: zero-padded centred frames, a DFT matrix, triangles on the mel scale."""
    if slaney:  # linear below 1 kHz, 27 log steps per factor 6.4 above
        to_mel = lambda f: np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))  # noqa: E731
        to_hz = lambda m: np.where(m < 15, 200 * m / 3, 1000 * 6.4 ** ((m - 15) / 27))  # noqa: E731
    else:
        to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
        to_hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    n = np.arange(win)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    padded = np.concatenate([np.zeros(n_fft // 2), x, np.zeros(n_fft // 2)])
    count = 1 + len(x) // hop
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(count)])
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft), k) / n_fft)
    power = np.abs(frames @ dft) ** 2  # (frames, bins)
    bins_hz = k * rate / n_fft
    pts = to_hz(np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2))
    bank = np.zeros((len(k), n_mels))
    for m in range(n_mels):
        lo, mid, hi = pts[m], pts[m + 1], pts[m + 2]
        for b, f in enumerate(bins_hz):
            if lo < f <= mid:
                bank[b, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[b, m] = (hi - f) / (hi - mid)
        if slaney:
            bank[:, m] *= 2 / (hi - lo)
    return np.log(power @ bank + 1e-6).T  # (n_mels, frames)


@pytest.mark.parametrize("slaney", [False, True])
def test_log_mel_of_a_tone_matches_numpy_within_1e_4(slaney):
    rate, tone_hz = 8000, 1000.0
    t = np.arange(4000) / rate
    noise = np.random.default_rng(0).normal(0, 0.01, t.shape)  # so that every bin holds energy well above float32 noise
    x = 0.5 * np.sin(2 * np.pi * tone_hz * t) + noise
    spec = Spectrogram(sample_rate=rate, n_fft=512, win_length=200, hop_length=80, n_mels=40, frames=50, f_min=20.0,
                       f_max=3800.0, mel_scale="slaney" if slaney else "htk", norm="slaney" if slaney else None)
    got = log_mel(torch.tensor(x, dtype=torch.float32), spec)
    ref = numpy_log_mel(x, rate, 512, 200, 80, 40, 20.0, 3800.0, slaney)
    assert got.dtype == torch.float32 and got.shape == ref.shape == (40, 51)
    assert np.abs(got.numpy() - ref).max() < 1e-4
    centres = mel_filterbank(257, rate, 40, 20.0, 3800.0, spec.mel_scale, spec.norm).argmax(dim=0) * rate / 512
    peak = int(got[:, 10:40].mean(dim=1).argmax())  # the tone's filter: the one centred nearest 1 kHz
    assert abs(float(centres[peak]) - tone_hz) == float((centres - tone_hz).abs().min())


def test_the_front_ends_duration_gives_exactly_its_frames():
    spec = Spectrogram(sample_rate=8000, n_fft=512, win_length=200, hop_length=80, n_mels=64, frames=64)
    assert spec.samples == 63 * 80 and spec.seconds == pytest.approx(0.63)
    assert log_mel(torch.zeros(3, spec.samples), spec).shape == (3, 64, 64)
    assert float(log_mel(torch.zeros(spec.samples), spec).max()) == pytest.approx(math.log(1e-6))  # silence


def test_front_end_settings_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"mel filter \d+ of n_mels=128 covers no FFT bin of 129 \(8000 Hz\)"):
        log_mel(torch.zeros(800), Spectrogram(sample_rate=8000, n_fft=256, hop_length=80, n_mels=128, frames=10))
    with pytest.raises(ConfigError, match=r"f_max=9000: expected 0 <= f_min < f_max <= 4000"):
        Spectrogram(sample_rate=8000, f_max=9000)
    with pytest.raises(ConfigError, match=r"spectrogram key 'nmels'"):
        Spectrogram.from_dict({"nmels": 3})
    assert Spectrogram.from_dict(Spectrogram(n_mels=32).to_dict()) == Spectrogram(n_mels=32)
