"""WAV decoding with the standard library's `wave`: PCM of 8, 16, 24 or 32 bits, any channel count, to mono float.

zir needs no audio library: `wave` reads the RIFF header and the PCM frames, and numpy turns them into a
float32 waveform in [-1, 1) (8-bit PCM is unsigned around 128, wider PCM signed little-endian). Channels
are averaged into one (noted, as a grayscale image's conversion is). A file that is not a WAV, uses an
encoding other than integer PCM (float, A-law, ...), holds fewer frames than its header declares, holds
none, or is silent raises `BadSample`: the loader skips it and counts it like a bad image. The header is
read first, so a file declaring more than `max_seconds` of audio is refused before its frames are read.
"""

from __future__ import annotations

import io
import os
import wave

import numpy as np

from zir.data.sources import BadSample

WAV_EXTENSIONS = (".wav", ".wave")  # FLAC and OGG: zir.data.audio_decode
DEFAULT_MAX_SECONDS = 600.0  # ten minutes: 38 MB of float32 at 16 kHz
MAX_SAMPLE_RATE = 384_000  # the highest rate of studio audio; resampling cost grows with the rate
SILENCE_PEAK = 1e-4  # -80 dBFS: below three steps of 16-bit PCM, a recording holds nothing to learn from
_FULL_SCALE = {1: 128.0, 2: 32768.0, 3: 8388608.0, 4: 2147483648.0}


def check_header(key: str, kind: str, channels: int, rate: int, frames: int, max_seconds: float | None) -> None:
    """Refuse, before reading any sample, a header with no rate or channel, an absurd rate or too long a clip."""
    if rate < 1 or channels < 1:
        raise BadSample(key, f"{kind} header with no sample rate or no channel")
    if rate > MAX_SAMPLE_RATE:
        raise BadSample(key, f"sample rate over {MAX_SAMPLE_RATE:,} Hz")
    if max_seconds is not None and frames / rate > max_seconds:
        raise BadSample(key, f"audio over {max_seconds:g} seconds")

def decode_wav(data: bytes | str | os.PathLike, key: str, notes: list[str] | None = None,
               max_seconds: float | None = DEFAULT_MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Bytes or a path -> (mono float32 waveform (T,) in [-1, 1), sample rate); raises BadSample."""
    notes = notes if notes is not None else []
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else os.fspath(data)
    try:
        with wave.open(source, "rb") as f:
            channels, width, rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            check_header(key, "WAV", channels, rate, frames, max_seconds)
            raw = f.readframes(frames)
    except FileNotFoundError:
        raise BadSample(key, "missing file") from None
    except wave.Error as err:
        text = str(err)
        if text.startswith("unknown format") or text.startswith("bad sample width"):
            raise BadSample(key, f"WAV encoding not integer PCM ({text})") from None
        raise BadSample(key, "not a WAV file") from None
    except (EOFError, OSError, ValueError):
        raise BadSample(key, "truncated WAV header") from None
    if frames == 0:
        raise BadSample(key, "empty audio")
    if len(raw) < frames * channels * width:
        raise BadSample(key, "truncated WAV")
    wave_ = pcm_to_float(raw, width, channels)
    if channels > 1:
        notes.append(f"{channels}-channel audio mixed to mono")
    if float(np.abs(wave_).max()) < SILENCE_PEAK:
        raise BadSample(key, "silent audio")
    return wave_, rate


def pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM bytes of `width` bytes per sample -> mono float32 (T,) in [-1, 1), channels averaged."""
    usable = len(raw) - len(raw) % (width * channels)
    buf = np.frombuffer(raw[:usable], dtype=np.uint8)
    if width == 1:
        values = buf.astype(np.float32) - 128.0  # 8-bit WAV is unsigned, silence at 128
    elif width == 3:
        b = buf.reshape(-1, 3).astype(np.int32)
        packed = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        values = ((packed ^ 0x800000) - 0x800000).astype(np.float32)  # sign-extend 24 bits
    else:
        values = np.frombuffer(buf.tobytes(), dtype={2: "<i2", 4: "<i4"}[width]).astype(np.float64)
    mono = values.reshape(-1, channels).mean(axis=1) / _FULL_SCALE[width]
    return np.ascontiguousarray(mono, dtype=np.float32)


def encode_wav(samples: np.ndarray, rate: int, width: int = 2) -> bytes:
    """A float waveform (T,) or (T, channels) in [-1, 1] -> WAV bytes of `width`-byte PCM (tests, fixtures)."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    scale = _FULL_SCALE[width]
    ints = np.clip(np.round(x * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        u = (ints & 0xFFFFFF).astype(np.uint32).reshape(-1)
        raw = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    else:
        raw = ints.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(x.shape[1])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(raw)
    return out.getvalue()
