"""Audio decoding by format: WAV through the standard library (`zir.data.wav`), FLAC and Ogg Vorbis through
`soundfile` (libsndfile, bundled in its wheel).

`decode_audio` picks the decoder from the file's suffix (a path's, or a shard member's extension), so WAV
keeps its dependency-free path and its exact integer-PCM scaling. A FLAC/OGG recording becomes the same mono
float32 waveform in [-1, 1) at its own rate; what the WAV path refuses is refused here too, with the same
reasons (`BadSample`: not audio, truncated, empty, silent, over `max_seconds` by its header, before its
frames are read), so a bad FLAC is skipped and counted like a bad WAV or a bad image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from zir.data.sources import BadSample
from zir.data.wav import DEFAULT_MAX_SECONDS, SILENCE_PEAK, WAV_EXTENSIONS, check_header, decode_wav

SNDFILE_EXTENSIONS = (".flac", ".ogg", ".oga")
AUDIO_EXTENSIONS = WAV_EXTENSIONS + SNDFILE_EXTENSIONS


def decode_audio(data: bytes | str | os.PathLike, key: str, notes: list[str] | None = None,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS, suffix: str | None = None) -> tuple[np.ndarray, int]:
    """Bytes or a path -> (mono float32 waveform (T,), sample rate), decoded by `suffix` (default: the path's)."""
    if suffix is None:
        suffix = "" if isinstance(data, (bytes, bytearray, memoryview)) else Path(os.fspath(data)).suffix
    suffix = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if suffix in SNDFILE_EXTENSIONS:
        return decode_sndfile(data, key, notes, max_seconds)
    return decode_wav(data, key, notes, max_seconds)


def decode_sndfile(data: bytes | str | os.PathLike, key: str, notes: list[str] | None = None,
                   max_seconds: float | None = DEFAULT_MAX_SECONDS) -> tuple[np.ndarray, int]:
    """FLAC or Ogg Vorbis (any format libsndfile reads) -> (mono float32 (T,), rate); raises BadSample."""
    import soundfile  # imported here: WAV-only data never loads libsndfile

    notes = notes if notes is not None else []
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else os.fspath(data)
    if isinstance(source, str) and not os.path.isfile(source):  # libsndfile says only "System error"
        raise BadSample(key, "missing file")
    try:
        f = soundfile.SoundFile(source)
    except (RuntimeError, TypeError, OSError, ValueError, EOFError) as err:  # LibsndfileError is a RuntimeError
        damaged = "malformed" in str(err)  # libsndfile knows the format but the file ends or breaks early
        raise BadSample(key, "truncated or malformed audio" if damaged else "not a FLAC or OGG file") from None
    with f:
        channels, rate, frames = f.channels, f.samplerate, f.frames
        check_header(key, "audio", channels, rate, frames, max_seconds)
        try:
            wave = f.read(frames, dtype="float32", always_2d=True)
        except (RuntimeError, OSError, ValueError, EOFError):
            raise BadSample(key, "truncated or malformed audio") from None
    if frames == 0 or wave.shape[0] == 0:
        raise BadSample(key, "empty audio")
    if wave.shape[0] < frames:
        raise BadSample(key, "truncated or malformed audio")
    if channels > 1:
        notes.append(f"{channels}-channel audio mixed to mono")
    mono = np.ascontiguousarray(wave.mean(axis=1, dtype=np.float64), dtype=np.float32)
    if float(np.abs(mono).max()) < SILENCE_PEAK:
        raise BadSample(key, "silent audio")
    return mono, rate
