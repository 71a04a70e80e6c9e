"""Caps that keep hostile or broken data from taking unbounded memory, and checks of the options that set them.

A source refuses an image before decoding it when its header declares more than `max_pixels` pixels
(40 megapixels by default: 120 MB as RGB, below PIL's own decompression-bomb error at 179 megapixels),
and a shard reader refuses a tar member larger than `max_member_bytes` (64 MiB by default) without
reading it; an audio source refuses a WAV whose header declares more than `max_seconds` (600 by default).
All are source options (`data.options: {max_pixels: ..., max_member_bytes: ..., max_seconds: ...}`).
"""

from __future__ import annotations

import os
import posixpath
import re

from zir.errors import ConfigError

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_MEMBER_BYTES = 64 * 2**20
# pax and GNU long-name headers hold a few names and numbers; a larger one is damage or an attack
MAX_HEADER_BYTES = 2**20


def whole_number(name: str, value, *, allow_none: bool = False) -> int | None:
    """`value` as a positive int, or a ConfigError naming `data.options.NAME`; None passes when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive whole number" + (" or null for no cap" if allow_none else "")
        raise ConfigError(f"data.options.{name}={value!r}: expected {expected}")
    return value


def seconds_cap(value) -> float | None:
    """`data.options.max_seconds` as a positive number of seconds of audio, or None for no cap."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"data.options.max_seconds={value!r}: expected a positive number of seconds or null for no cap")
    return float(value)


def pixel_cap_reason(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of this size is refused (a stable reason for counting), or None when it fits."""
    if max_pixels is not None and width * height > max_pixels:
        return f"image over {max_pixels:,} pixels"
    return None


def member_cap_reason(size: int, max_bytes: int) -> str | None:
    """Why a tar member of `size` bytes is refused (a stable reason for counting), or None when it fits."""
    if size > max_bytes:
        return f"member over {max_bytes:,} bytes"
    return None


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def outside_folder(path: str) -> bool:
    """True for a path that is absolute or climbs out of its folder with `..` (checked on the text alone)."""
    text = path.replace("\\", "/")
    if os.path.isabs(path) or text.startswith("/") or _DRIVE.match(path):
        return True
    return posixpath.normpath(text).split("/")[0] == ".."
