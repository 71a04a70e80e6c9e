"""WebDataset-style tar shards: brace lists, streaming reads, a split across ranks and workers, a shuffle buffer.

A shard is a tar file (plain or gzip-compressed) whose members are grouped into samples by key: the
member name up to the first dot of its file name. `KEY.jpg` (or .png, .webp, ...) is the image, `KEY.wav`
(.flac, .ogg) the audio, `KEY.cls` the class index, `KEY.txt` a caption and `KEY.json` a dict that may hold `captions`, `caption` or `label`.
Shards are read with `tarfile` in streaming mode over `DecodedStream`, so a shard is never loaded whole
and a truncated shard (plain or compressed) yields the samples before the damage, then one counted error. Members over `max_member_bytes` are passed
over unread, symlinks and devices are refused, hard links are read from their target: each refusal
skips (and counts) the sample it belongs to.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from zir.data.limits import (
    DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS, MAX_HEADER_BYTES, member_cap_reason, seconds_cap, whole_number,
)
from zir.data.sources import (
    IMAGE_EXTENSIONS,
    BadSample,
    Sample,
    Source,
    clean_captions,
    decode_image,
    sized,
    templated_captions,
)
from zir.data.streams import DecodedStream, ReadPastEnd
from zir.data.audio_decode import AUDIO_EXTENSIONS, decode_audio
from zir.data.wav import DEFAULT_MAX_SECONDS
from zir.errors import ConfigError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000000..000003}` ranges (zero padding kept) and `{a,b}` lists in a shard pattern."""
    ranged, listed = _RANGE.search(pattern), _LIST.search(pattern)
    # expand the leftmost brace first, so the first brace varies slowest
    if ranged and (not listed or ranged.start() < listed.start()):
        lo, hi = ranged.group(1), ranged.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        out = []
        for i in range(int(lo), int(hi) + step, step):
            out += expand_braces(pattern[: ranged.start()] + str(i).zfill(width) + pattern[ranged.end() :])
        return out
    if listed:
        out = []
        for part in listed.group(1).split(","):
            out += expand_braces(pattern[: listed.start()] + part + pattern[listed.end() :])
        return out
    return [pattern]


def resolve_shards(spec: str | os.PathLike | list) -> list[str]:
    """A pattern (braces, globs), a folder of shards or a list of paths -> the existing shard paths, in order."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[str] = []
    for one in specs:
        one = str(one)
        if os.path.isdir(one):
            inside = sorted(str(p) for p in Path(one).iterdir() if str(p).endswith(SHARD_SUFFIXES))
            if not inside:
                raise ConfigError(f"shards {one}: folder holds no .tar, .tar.gz or .tgz files")
            found += inside
            continue
        for path in expand_braces(one):
            if glob.has_magic(path):
                found += sorted(glob.glob(path))
            elif os.path.isfile(path):
                found.append(path)
            else:
                raise ConfigError(f"shards {one}: {path} does not exist")
    if not found:
        raise ConfigError(f"shards {spec}: the pattern matches no file")
    return found


def split_key(name: str) -> tuple[str, str]:
    """A member name -> (sample key, extension): 'a/b.seg.png' -> ('a/b', 'seg.png')."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class _WatchedTarInfo(tarfile.TarInfo):
    """TarInfo that notes why header reading stopped and refuses oversized metadata headers.

    In `r|` mode tarfile ends quietly at a header cut short or garbled, as if the archive were over;
    the note on the TarFile (`zir_stop`) lets `read_shard` tell a real end (a zero block) from damage.
    """

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            tar.zir_stop = e
            raise

    def _proc_member(self, tar):
        if self.type in _METADATA_TYPES and self.size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(f"{self.size}-byte metadata header")
        return super()._proc_member(tar)


_RECENT_MEMBERS = 64
_METADATA_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


def _read_at(path: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of the shard's uncompressed tar stream (a hard link's target), read afresh."""
    with DecodedStream(path) as stream:
        stream.skip(offset)
        return stream.read_exactly(size)


def read_shard(path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[dict | BadSample]:
    """Stream one shard: records {'__key__', 'ext': bytes, ...} in order, then a BadSample if the shard is damaged.

    A member over `max_member_bytes`, a symlink, a device or a hard link to a member not seen makes its
    sample a BadSample (counted, never read); hard links to earlier members are read from their target.
    Damage (a cut, garbled bytes) ends the shard with one BadSample: every sample before it is kept, the
    sample whose member the damage cut is lost with it (counted once, by that BadSample).
    """
    shard = os.path.basename(path)
    current: dict | None = None
    recent: OrderedDict[str, bytes] = OrderedDict()  # the last members read, for hard links to them
    held = 0  # bytes in `recent`, kept under max_member_bytes
    where: dict[str, tuple[int, int]] = {}  # member name -> (offset, size) in the tar stream
    stream: DecodedStream | None = None
    cut = False  # the damage hit inside a member's data: the sample being assembled is incomplete
    try:
        with DecodedStream(path) as stream, tarfile.open(fileobj=stream, mode="r|", tarinfo=_WatchedTarInfo) as tar:
            for member in tar:
                if member.isdir():
                    continue
                key, ext = split_key(member.name)
                if not ext or key.rsplit("/", 1)[-1].startswith("."):
                    continue  # hidden files and extension-less members are not sample parts
                if current is not None and current["__key__"] != key:
                    yield _finish(current)
                    current = None
                if current is None:
                    current = {"__key__": key, "__shard__": shard}
                if member.isfile():
                    where[member.name] = (member.offset_data, member.size)
                refused = _refusal(member, where, max_member_bytes)
                if refused:
                    current.setdefault("__bad__", refused)
                    continue
                cut = True
                if member.islnk():
                    data = recent.get(member.linkname)
                    if data is None:
                        data = _read_at(path, *where[member.linkname])
                else:
                    data = tar.extractfile(member).read()
                cut = False
                current[ext] = data
                recent[member.name] = data
                held += len(data)
                while len(recent) > _RECENT_MEMBERS or (len(recent) > 1 and held > max_member_bytes):
                    held -= len(recent.popitem(last=False)[1])
            if stream.damage is not None:  # the compressed stream ended early or garbled after the tar's end
                raise tarfile.ReadError("compressed stream damaged")
            stop = getattr(tar, "zir_stop", None)
            if not isinstance(stop, tarfile.EOFHeaderError):
                why = "cut short" if isinstance(stop, (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError)) else "garbled"
                raise tarfile.ReadError(f"header {why} before the end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, ReadPastEnd):  # a member's data cut short, as tarfile says when it reads one
            e = tarfile.ReadError(str(e))
        if current is not None and not cut:
            yield _finish(current)  # complete as far as the shard goes
        current = None
        cause = stream.damage if stream is not None and stream.damage is not None else e
        yield BadSample(shard, f"damaged shard ({_error_name(cause)})")
    if current is not None:
        yield _finish(current)


def _error_name(error: BaseException) -> str:
    """The class name of a damage error, with its module where the name alone says nothing (zlib.error)."""
    name = type(error).__name__
    return f"{type(error).__module__}.{name}" if name == "error" else name


def _refusal(member: tarfile.TarInfo, where: dict, max_bytes: int) -> str | None:
    """Why a sample member is not read (symlink, device, oversized, dangling hard link), or None."""
    if member.issym():
        return "symlink member"
    if member.islnk():
        if member.linkname not in where:
            return "hard link to a member not in the shard"
        return member_cap_reason(where[member.linkname][1], max_bytes)
    if not member.isfile():
        return "device or special member"
    return member_cap_reason(member.size, max_bytes)


def _finish(record: dict) -> dict | BadSample:
    """A complete record, or the BadSample of the first member it refused."""
    if "__bad__" in record:
        return BadSample(f"{record['__shard__']}:{record['__key__']}", record["__bad__"])
    return record


def decode_record(record: dict, classes: tuple[str, ...] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  max_seconds: float | None = DEFAULT_MAX_SECONDS, caption_templates: tuple[str, ...] | None = None) -> Sample:
    """A raw shard record -> Sample: the image and/or the audio (.wav, .flac, .ogg), the label from .cls/.json and the captions
    from .txt/.json (each written into every one of `caption_templates` when given: `seven` -> `the digit seven`)."""
    key = f"{record.get('__shard__', '')}:{record['__key__']}"
    notes: list[str] = []
    image_ext = next((e for e in record if "." + e.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS), None)
    audio_ext = next((e for e in record if "." + e.rsplit(".", 1)[-1] in AUDIO_EXTENSIONS), None)
    if image_ext is None and audio_ext is None:
        raise BadSample(key, "no image or audio in sample")
    meta: dict = {}
    if "json" in record:
        try:
            meta = json.loads(record["json"].decode("utf-8"))
            if not isinstance(meta, dict):
                meta = {}
                notes.append(".json not an object, ignored")
        except (UnicodeDecodeError, json.JSONDecodeError):
            notes.append("unreadable .json ignored")
    label = -1
    raw_label = record.get("cls", meta.get("label"))
    if raw_label is not None:
        try:
            label = int(raw_label.decode("utf-8").strip() if isinstance(raw_label, bytes) else raw_label)
        except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
            raise BadSample(key, "label is not an integer") from None
        if classes is not None and not 0 <= label < len(classes):
            raise BadSample(key, f"label {label} outside 0..{len(classes) - 1}")
    captions: list = []
    if isinstance(meta.get("captions"), list):
        captions = meta["captions"]
    elif isinstance(meta.get("caption"), str):
        captions = [meta["caption"]]
    elif "txt" in record:
        try:
            captions = [record["txt"].decode("utf-8")]
        except UnicodeDecodeError:
            notes.append("caption not UTF-8, dropped")
    captions = clean_captions(key, captions, notes)
    if caption_templates:
        captions = [t for c in captions for t in templated_captions(c, caption_templates)]
    sample = Sample(key=key, label=label, captions=captions, notes=notes)
    if image_ext is not None:
        sample.image = decode_image(record[image_ext], key, notes, max_pixels)
    if audio_ext is not None:
        sample.audio, sample.sample_rate = decode_audio(record[audio_ext], key, notes, max_seconds,
                                                        "." + audio_ext.rsplit(".", 1)[-1])
    return sample


def checked_templates(templates) -> tuple[str, ...]:
    """`data.options.caption_templates` as a tuple of strings that each write a word as {c} (and its article as {a})."""
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)) or not templates:
        raise ConfigError(f"data.options.caption_templates={templates!r}: expected a list such as ['the word {{c}}']")
    for t in templates:
        try:
            ok = isinstance(t, str) and "{c}" in t and bool(t.format(a="a", c="c"))
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"data.options.caption_templates: {t!r} is not a template with {{c}} (and optionally {{a}})")
    return tuple(templates)


def slot_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This reader's slot and the number of slots: (rank * workers + worker, world_size * workers)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers


class ShardSource(Source):
    """Samples streamed from WebDataset-style tar shards, shuffled through a buffer, split across readers."""

    def __init__(
        self,
        spec,
        *,
        name: str | None = None,
        classes: tuple[str, ...] | None = None,
        has_captions: bool | None = None,
        shuffle_buffer: int = 1000,
        length: int | None = None,
        size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        caption_templates: tuple[str, ...] | None = None,
    ):
        self.shards = resolve_shards(spec)
        self.name = name or f"shards:{spec}"
        self.classes = classes
        self.shuffle_buffer = shuffle_buffer
        self.length = length  # number of samples when known (built-in sets), else None
        self.image_size = whole_number("size", size, allow_none=True)
        self.max_pixels = whole_number("max_pixels", max_pixels, allow_none=True)
        self.max_member_bytes = whole_number("max_member_bytes", max_member_bytes)
        self.max_seconds = seconds_cap(max_seconds)
        self.expand_captions = caption_templates is not None  # captions are words: write each into the templates
        if caption_templates is not None:
            self.caption_templates = checked_templates(caption_templates)
        if has_captions is None:
            has_captions = self._peek_has_captions()
        self.has_captions = has_captions

    def _peek_has_captions(self) -> bool:
        for record in read_shard(self.shards[0], self.max_member_bytes):
            if isinstance(record, dict):
                return "txt" in record or "json" in record
        return False

    def records(
        self, slot: int = 0, n_slots: int = 1, *, epoch: int = 0, seed: int = 0, shuffle: bool = False
    ) -> Iterator[dict | BadSample]:
        """Raw records for one reader slot: its share of the shards (or of the samples when shards are few)."""
        shards = list(self.shards)
        if shuffle:
            random.Random(f"{seed}-{epoch}-shards").shuffle(shards)  # same order in every slot
        if len(shards) >= n_slots:
            mine, every = shards[slot::n_slots], 1
        else:
            mine, every = shards, n_slots  # fewer shards than readers: share the samples instead
        stream = self._chain(mine, slot if every > 1 else 0, every)
        if shuffle and self.shuffle_buffer > 1:
            stream = _shuffle(stream, self.shuffle_buffer, random.Random(f"{seed}-{epoch}-{slot}-buffer"))
        return stream

    def _chain(self, shards: list[str], offset: int, every: int) -> Iterator[dict | BadSample]:
        # skips take their turn like records, so readers sharing a shard count each one once
        i = 0
        for path in shards:
            for record in read_shard(path, self.max_member_bytes):
                if i % every == offset:
                    yield record
                i += 1

    def stream(
        self, slot: int = 0, n_slots: int = 1, *, epoch: int = 0, seed: int = 0, shuffle: bool = False
    ) -> Iterator[Sample | BadSample]:
        """Decoded samples for one reader slot; unusable ones come out as BadSample values, never raised."""
        for record in self.records(slot, n_slots, epoch=epoch, seed=seed, shuffle=shuffle):
            if isinstance(record, BadSample):
                yield record
                continue
            try:
                sample = decode_record(record, self.classes, self.max_pixels, self.max_seconds,
                                       self.caption_templates if self.expand_captions else None)
            except BadSample as bad:
                yield bad
                continue
            if sample.image is not None:
                sample.image = sized(sample.image, self.image_size)
            yield sample

    def iter_captions(self, limit: int | None = None) -> Iterator[str]:
        """Every caption of up to `limit` samples, read from .txt/.json members without decoding images."""
        if not self.has_captions:
            yield from super().iter_captions(limit)
            return
        n = 0
        for record in self.records():
            if isinstance(record, BadSample):
                continue
            if limit is not None and n >= limit:
                return
            n += 1
            meta = {}
            if "json" in record:
                try:
                    meta = json.loads(record["json"].decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    meta = {}
            caps = meta.get("captions") if isinstance(meta, dict) else None
            if not isinstance(caps, list):
                caps = [record["txt"].decode("utf-8", "replace")] if "txt" in record else []
            for cap in clean_captions("", caps, []):
                yield from templated_captions(cap, self.caption_templates) if self.expand_captions else [cap]

    def __iter__(self) -> Iterator[Sample]:
        """Every usable sample of every shard, in order, in this process."""
        for item in self.stream():
            if isinstance(item, Sample):
                yield item


def _shuffle(stream, size: int, rng: random.Random):
    buf = []
    for item in stream:
        if isinstance(item, BadSample):
            yield item
            continue
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        buf[j], item = item, buf[j]
        yield item
    rng.shuffle(buf)
    yield from buf
