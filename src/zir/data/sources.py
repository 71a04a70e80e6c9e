"""Sources: where samples come from (folders, caption tables), how images are decoded, and how bad data is counted.

A source yields `Sample`s: a key, an RGB image (H, W, 3) uint8 or a mono waveform (audio sources,
`zir.data.audio_sources`), an optional class label and a list of captions. Map-style sources (`MapSource`) have a length and random access; streaming sources
(`StreamSource`, the tar shards) are read in order by each worker. Reading a sample that cannot be used
raises `BadSample`; the loader skips it, counts it in a `DataReport` and carries on, so a bad file never
stops a run or kills a worker. Conversions that keep a sample (grayscale, RGBA, palette, 16-bit, an
over-long caption) are counted too.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from zir.data.limits import DEFAULT_MAX_PIXELS, outside_folder, pixel_cap_reason, whole_number
from zir.data.paths import class_folders
from zir.errors import ConfigError, UnknownNameError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_CAPTION_CHARS = 1000
# Captions made from class names when a labelled source is asked for text (CLIP-style prompts).
CAPTION_TEMPLATES = ("a photo of {a} {c}.", "a picture of {a} {c}.", "{a} {c}.", "an image of {a} {c}.", "a small photo of the {c}.")


@dataclass
class Sample:
    """One item of a source: key, image (H, W, 3) uint8 RGB and/or audio (T,) float32 mono at `sample_rate` Hz,
    label (-1 when none), captions, conversion notes."""

    key: str
    image: np.ndarray | None = None
    label: int = -1
    captions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    audio: np.ndarray | None = None
    sample_rate: int = 0


class BadSample(Exception):
    """A sample that cannot be used (missing, corrupt, not an image, no caption); skipped and counted."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


class DataReport:
    """Counts of skipped samples and of conversions, by reason, with the first few keys of each."""

    def __init__(self, keep: int = 5):
        self.keep = keep
        self.skipped: Counter = Counter()
        self.converted: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.seen = 0

    def skip(self, key: str, reason: str) -> None:
        """Record one skipped sample."""
        self.skipped[reason] += 1
        self._example(reason, key)

    def convert(self, key: str, note: str) -> None:
        """Record one sample kept after a conversion (grayscale -> RGB, truncated caption, ...)."""
        self.converted[note] += 1
        self._example(note, key)

    def _example(self, reason: str, key: str) -> None:
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.keep:
            ex.append(key)

    def update(self, skipped=(), converted=(), seen: int = 0) -> None:
        """Add (key, reason) pairs as a batch carries them from a worker."""
        for key, reason in skipped:
            self.skip(key, reason)
        for key, note in converted:
            self.convert(key, note)
        self.seen += seen

    @property
    def n_skipped(self) -> int:
        """Total number of skipped samples."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        """Plain dict for logs and run summaries."""
        return {
            "seen": self.seen,
            "skipped": dict(self.skipped),
            "converted": dict(self.converted),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        """One line: how many were skipped and converted, by reason, with the first few files."""
        if not self.skipped and not self.converted:
            return "no bad data"
        parts = []
        for counter, verb in ((self.skipped, "skipped"), (self.converted, "converted")):
            for reason, n in counter.most_common():
                parts.append(f"{n} {verb} ({reason}: {', '.join(self.examples.get(reason, []))})")
        return "; ".join(parts)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def templated_captions(class_name: str, templates: tuple[str, ...] = CAPTION_TEMPLATES) -> list[str]:
    """CLIP-style captions for a class name: 'a photo of a dog.', ... (one per template)."""
    c = class_name.replace("_", " ")
    return [t.format(a=_article(c), c=c) for t in templates]


def clean_captions(key: str, captions, notes: list[str]) -> list[str]:
    """Strip captions, drop empty ones and cut over-long ones at a word boundary (noted in `notes`)."""
    out = []
    for cap in captions:
        if not isinstance(cap, str):
            cap = "" if cap is None else str(cap)
        cap = " ".join(cap.split())
        if not cap:
            notes.append("empty caption dropped")
            continue
        if len(cap) > MAX_CAPTION_CHARS:
            cap = cap[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0]
            notes.append("over-long caption truncated")
        out.append(cap)
    return out


def decode_image(
    data: bytes | str | os.PathLike, key: str, notes: list[str] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Bytes or a path -> (H, W, 3) uint8 RGB; converts grayscale, RGBA, palette and 16-bit; raises BadSample.

    The header is read first: an image declaring more than `max_pixels` pixels is refused before any
    pixel is decoded, so a few hundred bytes of PNG cannot claim gigabytes.
    """
    notes = notes if notes is not None else []
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(data))
        else:
            img = Image.open(data)
        with img:
            too_big = pixel_cap_reason(img.width, img.height, max_pixels)
            if too_big:
                raise BadSample(key, too_big)
            img.load()
            return _to_rgb(img, notes)
    except FileNotFoundError:
        raise BadSample(key, "missing file") from None
    except UnidentifiedImageError:
        raise BadSample(key, "not an image") from None
    except Image.DecompressionBombError:
        raise BadSample(key, "image too large") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise BadSample(key, "corrupt or truncated image") from None


def _to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        notes.append("16-bit or float image scaled to 8-bit")
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        notes.append("palette image converted to RGB")
        if img.mode == "RGB":
            return np.asarray(img, dtype=np.uint8).copy()
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        # transparent pixels shown on mid grey rather than on whatever colour the file left under them
        back = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        notes.append("alpha channel composited on grey")
        return np.asarray(Image.alpha_composite(back, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode in ("L", "1"):
        notes.append("grayscale converted to RGB")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    else:
        notes.append(f"{mode} converted to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` and centre-crop: (H, W, 3) uint8 -> (size, size, 3) uint8.

    Only the central square is resampled (PIL's `box`), so an extreme aspect ratio (200000x1) costs no
    more memory than a square image; the pixels are those of resizing the whole image, then cropping.
    """
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    img = Image.fromarray(image)
    if (nh, nw) == (h, w):
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    sy, sx = h / nh, w / nw  # source pixels per output pixel
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    img = img.resize((size, size), Image.BICUBIC if scale > 1 else Image.BILINEAR, box=box,
                     reducing_gap=None if scale > 1 else 2.0)
    return np.asarray(img, dtype=np.uint8)


class Source:
    """Base of all sources: a name, optional class names, and whether samples carry captions."""

    name: str = "source"
    classes: tuple[str, ...] | None = None
    has_captions: bool = False
    image_size: int | None = None  # side of every image when all share one square size, else None
    caption_templates: tuple[str, ...] = CAPTION_TEMPLATES  # captions from class names ({a}: article, {c}: class)
    zeroshot_templates: tuple[str, ...] | None = None  # zero-shot prompts ({} the class); None: eval's own

    def describe(self) -> str:
        """One line naming the source, for logs."""
        return self.name

    def templated_captions(self, label: int) -> list[str]:
        """Captions made from the class name of `label`, for labelled sources without captions."""
        if not self.classes or label < 0:
            return []
        return templated_captions(self.classes[label], self.caption_templates)

    def iter_captions(self, limit: int | None = None) -> Iterator[str]:
        """Every caption of up to `limit` samples (a tokenizer corpus); class-name captions for labelled sources."""
        if not self.has_captions:
            for name in self.classes or ():
                yield from templated_captions(name, self.caption_templates)
            return
        for n, sample in enumerate(self):
            if limit is not None and n >= limit:
                return
            yield from sample.captions


class MapSource(Source):
    """A source with a length and random access by index; `get(i)` raises BadSample for unusable items."""

    def __len__(self) -> int:
        """Number of samples (including any that later turn out bad)."""
        raise NotImplementedError

    def get(self, index: int) -> Sample:
        """The sample at `index`, decoded; raises BadSample when it cannot be used."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        """All usable samples in order, bad ones silently skipped (see `iter_with_report`)."""
        for i in range(len(self)):
            try:
                yield self.get(i)
            except BadSample:
                continue

    def labels(self) -> np.ndarray | None:
        """All labels (N,) without decoding images, or None when unlabelled."""
        return None


class ImageFolderSource(MapSource):
    """A folder of images, labelled by class sub-folder (`root/CLASS/*.jpg`) or unlabelled (any layout).

    `size` resizes and centre-crops every image to a square of that side; `max_pixels` refuses (counts)
    images whose header declares more pixels, before decoding them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labeled: bool | None = None,
        *,
        size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.root = Path(root)
        self.files, self._labels, classes = class_folders(self.root, IMAGE_EXTENSIONS, labeled, "image")
        if classes is not None:
            self.classes = classes
        self.name = f"folder:{self.root}"
        self.image_size = whole_number("size", size, allow_none=True)
        self.max_pixels = whole_number("max_pixels", max_pixels, allow_none=True)

    def __len__(self) -> int:
        """Number of image files found."""
        return len(self.files)

    def get(self, index: int) -> Sample:
        """Decode image `index`; its label is the index of its class sub-folder (-1 when unlabelled)."""
        path = self.files[index]
        key = str(path.relative_to(self.root))
        notes: list[str] = []
        image = sized(decode_image(path, key, notes, self.max_pixels), self.image_size)
        return Sample(key=key, image=image, label=self._labels[index], notes=notes)

    def labels(self) -> np.ndarray | None:
        """Class index of every file (N,), or None for an unlabelled folder."""
        return np.asarray(self._labels, dtype=np.int64) if self.classes else None


def sized(image: np.ndarray, size: int | None) -> np.ndarray:
    """The image fitted to a `size` square (the `size` option of path sources), or unchanged when None."""
    return image if size is None else fit_square(image, size)


_IMAGE_COLUMNS = ("image", "filepath", "file", "path", "image_path", "filename", "img")
_CAPTION_COLUMNS = ("caption", "text", "captions", "title", "sentence")
_CSV_FIELD_LIMIT = 2**31 - 1  # Python's csv refuses fields over 131,072 characters unless raised


class CaptionTableSource(MapSource):
    """A CSV, TSV or JSONL table of (image path, caption) rows; several rows per image become one sample.

    Image paths are relative to the table's folder. A path that is absolute or climbs out of it (`../`)
    fails the whole table with one error naming the line, unless `allow_outside=True`: a table downloaded
    from elsewhere must not make zir read arbitrary files. Rows that are not JSON objects, or name no
    image, count as skipped samples. `size` and `max_pixels` are as for `ImageFolderSource`.
    """

    has_captions = True
    media = "image"  # what the path column names (an audio table: `zir.data.audio_sources.AudioCaptionTableSource`)
    media_columns = _IMAGE_COLUMNS  # the path column's default names, the first present chosen

    def __init__(
        self,
        path: str | os.PathLike,
        image_column: str | None = None,
        caption_column: str | None = None,
        *,
        size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        allow_outside: bool = False,
    ):
        self.image_size = whole_number("size", size, allow_none=True)
        self.max_pixels = whole_number("max_pixels", max_pixels, allow_none=True)
        self._load(path, image_column, caption_column, allow_outside)
        self.image_column = self.media_column

    def _load(self, path, media_column: str | None, caption_column: str | None, allow_outside: bool) -> None:
        """Read the table: its media and caption columns, one entry per distinct file, rows naming none kept as bad."""
        what = self.media
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"caption table {self.path}: no such file")
        if not isinstance(allow_outside, bool):
            raise ConfigError(f"data.options.allow_outside={allow_outside!r}: expected true or false")
        self.name = f"table:{self.path}"
        self.bad_rows: list[tuple[str, str]] = []  # (key, reason): counted as skipped samples after the files
        rows, columns = self._read_rows()
        if not rows:
            raise ConfigError(f"caption table {self.path}: no rows")
        self.media_column = self._column(columns, media_column, self.media_columns, what)
        self.caption_column = self._column(columns, caption_column, _CAPTION_COLUMNS, "caption")
        grouped: dict[str, list] = {}
        for line, row in rows:
            img = row.get(self.media_column)
            if img is None or str(img).strip() == "":
                self.bad_rows.append((f"{self.path.name}:{line}", f"row names no {what}"))
                continue
            img = str(img).strip()
            if not allow_outside and outside_folder(img):
                raise ConfigError(
                    f"caption table {self.path}, line {line}: {what} path {img!r} is outside the table's folder "
                    "(absolute or ../); pass allow_outside=True (data.options.allow_outside: true) to read it"
                )
            caps = row.get(self.caption_column)
            caps = caps if isinstance(caps, list) else [caps]
            grouped.setdefault(img, []).extend(caps)
        if not grouped:
            raise ConfigError(f"caption table {self.path}: column {self.media_column!r} is empty in every row")
        self.images = list(grouped)  # the distinct files (images, or recordings in an audio table)
        self.captions = [grouped[k] for k in self.images]
        self.base = self.path.parent

    def _read_rows(self) -> tuple[list[tuple[int, dict]], list[str]]:
        """(line number, row) pairs and the column names (see `read_table`)."""
        return read_table(self.path, self.bad_rows)

    def _column(self, columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str) -> str:
        if wanted is not None:
            if wanted not in columns:
                raise ConfigError(
                    f"caption table {self.path}: no {what} column {wanted!r} (columns: {', '.join(columns)})"
                )
            return wanted
        lower = {c.lower(): c for c in columns}
        for name in defaults:
            if name in lower:
                return lower[name]
        raise ConfigError(
            f"caption table {self.path}: no {what} column; name one of {', '.join(defaults)} "
            f"or pass {what}_column= (columns: {', '.join(columns)})"
        )

    def __len__(self) -> int:
        """Number of distinct files in the table, plus the unusable rows (counted as skipped when read)."""
        return len(self.images) + len(self.bad_rows)

    def iter_captions(self, limit: int | None = None) -> Iterator[str]:
        """Every caption in the table (up to `limit` images), without opening any image."""
        for caps in self.captions[:limit]:
            yield from clean_captions("", caps, [])

    def get(self, index: int) -> Sample:
        """Decode file `index` (path relative to the table) with all of its captions."""
        if index >= len(self.images):
            raise BadSample(*self.bad_rows[index - len(self.images)])
        rel = self.images[index]
        notes: list[str] = []
        captions = clean_captions(rel, self.captions[index], notes)
        if not captions:
            raise BadSample(rel, "no usable caption")
        return self._decode(rel, captions, notes)

    def _decode(self, rel: str, captions: list[str], notes: list[str]) -> Sample:
        """The sample of file `rel` (relative to the table's folder) with its captions."""
        image = sized(decode_image(self.base / rel, rel, notes, self.max_pixels), self.image_size)
        return Sample(key=rel, image=image, captions=captions, notes=notes)


def read_table(path: Path, bad_rows: list) -> tuple[list[tuple[int, dict]], list[str]]:
    """A caption table's (line number, row) pairs and column names; rows that are not JSON objects go to
    `bad_rows` as (key, reason). A byte-order mark is allowed."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path, bad_rows)
        if suffix not in (".csv", ".tsv", ".txt"):
            raise ConfigError(f"caption table {path}: expected a .csv, .tsv or .jsonl file")
        return _read_csv(path, delimiter="\t" if suffix in (".tsv", ".txt") else ",")
    except UnicodeDecodeError:
        raise ConfigError(f"caption table {path}: not UTF-8 text") from None


def _read_jsonl(path: Path, bad_rows: list) -> tuple[list[tuple[int, dict]], list[str]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"caption table {path}, line {n}: not JSON ({e.msg})") from None
            if isinstance(row, dict):
                rows.append((n, row))
            else:
                bad_rows.append((f"{path.name}:{n}", "row is not a JSON object"))
    return rows, sorted({k for _, r in rows for k in r})


def _read_csv(path: Path, delimiter: str) -> tuple[list[tuple[int, dict]], list[str]]:
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            try:
                rows = [(reader.line_num, row) for row in reader]
            except csv.Error as e:
                raise ConfigError(f"caption table {path}, line {reader.line_num}: {e}") from None
            return rows, list(reader.fieldnames or [])
    finally:
        csv.field_size_limit(old_limit)


def check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
    """Raise UnknownNameError naming the splits a source has when `split` is not one of them."""
    if split not in splits:
        raise UnknownNameError(f"{name} has no split {split!r}: expected one of {', '.join(splits)}")
