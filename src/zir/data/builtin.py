"""Built-in datasets (shapes, digits, cifar10, flickr8k, fashion_mnist, fsdd, av_digits) and `open_source`, the one entry point."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable

import numpy as np

from zir.data import shapes as _shapes
from zir.data.audio_sources import (
    SPOKEN_WORD_PROMPTS, SPOKEN_WORD_TEMPLATES, AudioCaptionTableSource, AudioFolderSource, holds_audio_only,
    table_holds_audio,
)
from zir.data.av_digits import av_digits
from zir.data.limits import DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS, whole_number
from zir.data.options import check_options
from zir.data.paths import data_root as _data_root
from zir.data.shards import SHARD_SUFFIXES, ShardSource
from zir.data.speaker_split import DEFAULT_TEST_SPEAKERS, SPLIT_BY, SpeakerSplit, by_speaker
from zir.data.sources import (
    IMAGE_EXTENSIONS,
    CaptionTableSource,
    ImageFolderSource,
    MapSource,
    Sample,
    Source,
    check_split,
    sized,
)
from zir.data.audio_decode import AUDIO_EXTENSIONS
from zir.data.wav import DEFAULT_MAX_SECONDS
from zir.errors import ConfigError, UnknownNameError


class ShapesSource(MapSource):
    """The procedural `shapes` dataset as a source; `label` picks the class task (shape, colour, size, count)."""

    has_captions = True

    def __init__(
        self,
        split: str = "train",
        *,
        n: int | None = None,
        seed: int = 0,
        size: int = 64,
        objects: tuple[int, int] = (1, 3),
        object_scale: float = 1.0,
        label: str = "shape",
        cache_dir=None,
    ):
        check_split("shapes", split, _shapes.SPLITS)
        self.data = _shapes.load_shapes(
            split, n=n, seed=seed, size=size, objects=tuple(objects), object_scale=object_scale, cache_dir=cache_dir
        )
        if len(self.data) == 0:
            raise ConfigError(f"shapes split {split!r}: n=0 gives an empty dataset")
        self.split, self.label = split, label
        self.classes = _shapes.class_names(label)
        self._labels = _shapes.labels(self.data, label)
        self.name = f"shapes:{split}"
        self.image_size = size

    def __len__(self) -> int:
        """Number of images in the split."""
        return len(self.data)

    def get(self, index: int) -> Sample:
        """Image `index` with its label and its captions."""
        return Sample(
            key=f"shapes/{self.split}/{index:06d}",
            image=self.data.images[index],
            label=int(self._labels[index]),
            captions=self.data.captions[index],
        )

    def labels(self) -> np.ndarray:
        """All labels (N,) for the chosen task."""
        return self._labels

    def iter_captions(self, limit: int | None = None):
        """Every caption of up to `limit` images, without touching the pixels."""
        for i in range(min(len(self), limit if limit is not None else len(self))):
            yield from self.data.captions[i]

    def pixel_masks(self, kind: str = "shape", indices=None) -> np.ndarray:
        """(N, size, size) class per pixel (0 background, 1 + shape or colour index) of the images at `indices`."""
        from zir.data.shape_masks import pixel_masks

        return pixel_masks(self.data, kind, indices)


def stratified_split(labels: np.ndarray, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> list[np.ndarray]:
    """Indices of each part, each class divided in the same proportions, shuffled with `seed`."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        cuts = np.round(bounds * len(idx)).astype(int)
        start = 0
        for p, stop in enumerate(cuts):
            parts[p] += idx[start:stop].tolist()
            start = stop
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class ArraySource(MapSource):
    """Images held in memory (N, H, W, 3) uint8 with labels and optional captions per image (`size`: resized)."""

    def __init__(self, name, images, labels, classes, captions=None, keys=None, size: int | None = None):
        self.name, self.images, self._labels, self.classes = name, images, np.asarray(labels, np.int64), tuple(classes)
        self.captions = captions
        self.has_captions = captions is not None
        h, w = images.shape[1:3]
        self.size = whole_number("size", size, allow_none=True)
        self.image_size = self.size or (h if h == w else None)
        self.keys = keys
        if len(images) == 0:
            raise ConfigError(f"{name}: empty dataset")

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)

    def get(self, index: int) -> Sample:
        """Image `index`, its label and captions."""
        caps = list(self.captions[index]) if self.captions is not None else []
        key = self.keys[index] if self.keys is not None else f"{self.name}/{index:06d}"
        image = sized(self.images[index], self.size if self.size != self.images.shape[1] else None)
        return Sample(key=key, image=image, label=int(self._labels[index]), captions=caps)

    def labels(self) -> np.ndarray:
        """All labels (N,)."""
        return self._labels

    def iter_captions(self, limit: int | None = None):
        """Every caption of up to `limit` images (class-name captions when there are none)."""
        if self.captions is None:
            yield from super().iter_captions(limit)
            return
        for caps in self.captions[:limit]:
            yield from caps


def _digit_captions(d: int) -> list[str]:
    w = _DIGIT_WORDS[d]
    return [f"a handwritten digit {w}.", f"the number {d}.", f"a photo of the digit {d}.", f"a handwritten {w}.", f"{w}."]


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (N, 64) in 0..16 and their labels (N,), read from scikit-learn's bundled CSV."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("digits needs scikit-learn (it ships the data): pip install scikit-learn")
    csv_path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv_path.is_file():
        # read the bundled file directly: importing sklearn.datasets takes seconds, the file milliseconds
        table = np.loadtxt(csv_path, delimiter=",", dtype=np.float64)
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target.astype(np.int64)


def digits(split: str = "train", *, size: int = 32, seed: int = 0) -> ArraySource:
    """scikit-learn's 1,797 real 8x8 handwritten digits, resized to `size`, with templated captions."""
    check_split("digits", split, ("train", "val", "test", "all"))
    from PIL import Image

    pixels, target = _load_digits()
    raw = (pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # bright ink, dark ground
    parts = dict(zip(("train", "val", "test"), stratified_split(target, seed=seed)))
    idx = np.arange(len(target)) if split == "all" else parts[split]
    images = np.stack(
        [np.asarray(Image.fromarray(raw[i]).resize((size, size), Image.BILINEAR)) for i in idx]
    )
    images = np.repeat(images[..., None], 3, axis=3)
    captions = [_digit_captions(int(target[i])) for i in idx]
    keys = [f"digits/{i:04d}" for i in idx]
    return ArraySource(f"digits:{split}", images, target[idx], _DIGIT_WORDS, captions, keys)


FASHION_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally .gz) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ConfigError(f"{path}: not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ConfigError(f"{path}: unknown IDX element type {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: IDX header says {shape} but the file holds {arr.size} values")
    return arr.reshape(shape)


def fashion_mnist(split: str = "train", *, root: str | os.PathLike | None = None, size: int | None = None) -> ArraySource:
    """Fashion-MNIST from the IDX files of the Debian package `dataset-fashion-mnist` (28x28, 10 classes)."""
    check_split("fashion_mnist", split, ("train", "test"))
    root = Path(root) if root is not None else FASHION_DIR
    prefix = "train" if split == "train" else "t10k"

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte", f"{prefix}-{kind}.idx{3 if kind == 'images' else 1}-ubyte"):
            for suffix in ("", ".gz"):
                if (root / (name + suffix)).is_file():
                    return root / (name + suffix)
        raise ConfigError(
            f"fashion_mnist: no {prefix} {kind} IDX file in {root}; install it with "
            "`apt-get install -y dataset-fashion-mnist` or pass root="
        )

    images = read_idx(find("images"))
    labels = read_idx(find("labels")).astype(np.int64)
    images = np.repeat(images[..., None], 3, axis=3)
    return ArraySource(f"fashion_mnist:{split}", images, labels, FASHION_CLASSES, size=size)


def _real_root(name: str, data_root, files: str) -> Path:
    try:
        root = _data_root(data_root)
    except ConfigError:
        raise ConfigError(
            f"{name} is real data and is not shipped with zir: put its shards ({files}) in DIR/{name}/ "
            "and pass --data-root DIR or set ZIR_DATA=DIR"
        ) from None
    folder = root / name
    if not folder.is_dir():
        raise ConfigError(f"{name}: no folder {folder}; put its shards ({files}) there or point --data-root elsewhere")
    return folder


def cifar10(split: str = "train", *, data_root=None, shuffle_buffer: int = 1000, size: int | None = None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ShardSource:
    """CIFAR-10 (32x32, 10 classes) from the gzip tar shards in DATA_ROOT/cifar10; captions from class names."""
    check_split("cifar10", split, ("train", "test"))
    folder = _real_root("cifar10", data_root, "train-*.tar.gz, test-*.tar.gz, classes.txt")
    names_file = folder / "classes.txt"
    if not names_file.is_file():
        raise ConfigError(f"cifar10: {names_file} is missing (one class name a line, in index order)")
    classes = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    length = {"train": 50_000, "test": 10_000}[split]
    source = ShardSource(
        str(folder / f"{split}-*.tar*"),
        name=f"cifar10:{split}",
        classes=classes,
        has_captions=False,
        shuffle_buffer=shuffle_buffer,
        length=length,
        size=size,
        max_pixels=max_pixels,
        max_member_bytes=max_member_bytes,
    )
    source.image_size = size or 32
    return source


def flickr8k(split: str = "train", *, data_root=None, shuffle_buffer: int = 1000, size: int | None = None,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ShardSource:
    """Flickr8k (112x112 photos, 5 human captions each) from the gzip tar shards in DATA_ROOT/flickr8k."""
    check_split("flickr8k", split, ("train", "val", "test"))
    folder = _real_root("flickr8k", data_root, "train-*.tar.gz, val-*.tar.gz, test-*.tar.gz")
    length = {"train": 6_091, "val": 1_000, "test": 1_000}[split]
    source = ShardSource(
        str(folder / f"{split}-*.tar*"), name=f"flickr8k:{split}", has_captions=True, shuffle_buffer=shuffle_buffer,
        length=length, size=size, max_pixels=max_pixels, max_member_bytes=max_member_bytes,
    )
    source.image_size = size or 112
    return source


def fsdd(split: str = "train", *, data_root=None, shuffle_buffer: int = 1000,
         max_seconds: float | None = DEFAULT_MAX_SECONDS,
         max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, split_by: str = "recording",
         test_speakers=DEFAULT_TEST_SPEAKERS) -> ShardSource | SpeakerSplit:
    """The Free Spoken Digit Dataset (8 kHz speech, digits 0-9, 6 speakers) from the gzip tar shards in
    DATA_ROOT/fsdd: the recording, its digit as the class, and its word written into spoken-word captions.
    `split_by="speaker"` holds out every recording of `test_speakers` instead (`zir.data.speaker_split`)."""
    check_split("fsdd", split, ("train", "test"))
    if split_by not in SPLIT_BY:
        raise ConfigError(f"fsdd option split_by={split_by!r}: expected one of {', '.join(SPLIT_BY)}")
    if split_by == "speaker":
        shards = [fsdd(s, data_root=data_root, max_seconds=max_seconds, max_member_bytes=max_member_bytes)
                  for s in ("train", "test")]
        return by_speaker(shards, split, test_speakers)
    folder = _real_root("fsdd", data_root, "train-*.tar.gz, test-*.tar.gz, classes.txt")
    names_file = folder / "classes.txt"
    if not names_file.is_file():
        raise ConfigError(f"fsdd: {names_file} is missing (one digit word a line, zero to nine)")
    classes = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    source = ShardSource(
        str(folder / f"{split}-*.tar*"), name=f"fsdd:{split}", classes=classes, has_captions=True,
        shuffle_buffer=shuffle_buffer, length={"train": 2_700, "test": 300}[split], max_seconds=max_seconds,
        max_member_bytes=max_member_bytes, caption_templates=SPOKEN_WORD_TEMPLATES,
    )
    source.zeroshot_templates = SPOKEN_WORD_PROMPTS
    return source


# name -> factory(split, **options); the only global state of zir.data, extended by register_source.
# The factories themselves (not wrappers) so that their signatures say which options they take.
SOURCES: dict[str, Callable[..., Source]] = {
    "shapes": ShapesSource,
    "digits": digits,
    "cifar10": cifar10,
    "flickr8k": flickr8k,
    "fashion_mnist": fashion_mnist,
    "fsdd": fsdd,
    "av_digits": av_digits,
}
REAL_DATA = ("cifar10", "flickr8k", "fsdd", "av_digits")  # built-in names read from --data-root / $ZIR_DATA
_PATH_KINDS = {"folder": ImageFolderSource, "table": CaptionTableSource, "shards": ShardSource, "audio": AudioFolderSource,
               "audio_table": AudioCaptionTableSource}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10"}
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def register_source(name: str, factory: Callable[..., Source]) -> None:
    """Add a built-in name to `open_source`: factory(split, **options) -> Source."""
    SOURCES[name] = factory


def open_source(spec: str | os.PathLike, *, split: str | None = None, data_root=None, **options) -> Source:
    """A source from a built-in name (`shapes`, `shapes:val`, `cifar10:test`, ...) or a path.

    Paths: a folder of images (labelled when it holds only class sub-folders), a folder of WAV/FLAC/OGG files (the
    same), a caption table (.csv, .tsv, .jsonl) of images or of recordings (`table_holds_audio`), or tar shards (a file, a brace pattern such as
    `train-{000000..000003}.tar.gz`, a glob, or a folder of shards; members .jpg, .png, ... or .wav).
    Prefixes force a kind: `folder:`, `unlabeled:`, `table:` (of images), `shards:`, `audio:` (a folder or a table).
    """
    text = os.fspath(spec)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ("folder", "unlabeled", "unlabelled", "table", "shards", "audio"):
        if prefix in ("folder", "unlabeled", "unlabelled"):
            options = _options("folder", rest, options)
            options["labeled"] = prefix == "folder"
            return ImageFolderSource(rest, **options)
        if prefix == "table":
            return CaptionTableSource(rest, **_options("table", rest, options))
        if prefix == "audio" and rest.endswith(_TABLE_SUFFIXES) and Path(rest).is_file():
            return AudioCaptionTableSource(rest, **_options("audio_table", rest, options))
        if prefix == "audio":
            return AudioFolderSource(rest, **_options("audio", rest, options))
        return ShardSource(rest, **_options("shards", rest, options))
    name = _ALIASES.get(prefix.lower(), prefix.lower())
    if name in SOURCES and not os.path.exists(text):
        split = split or (rest if sep else "train")
        if name in REAL_DATA:
            options.setdefault("data_root", data_root)
        return SOURCES[name](split, **check_options(f"the {name} source", SOURCES[name], options, _everyone()))
    path = Path(text)
    if text.endswith(_TABLE_SUFFIXES) and path.is_file():
        if table_holds_audio(path):
            return AudioCaptionTableSource(path, **_options("audio_table", text, options))
        return CaptionTableSource(path, **_options("table", text, options))
    if text.endswith(SHARD_SUFFIXES) or "{" in text or any(ch in text for ch in "*?["):
        return ShardSource(text, **_options("shards", text, options))
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        media = IMAGE_EXTENSIONS + AUDIO_EXTENSIONS
        if any(str(p).endswith(SHARD_SUFFIXES) for p in files) and not any(p.suffix.lower() in media for p in files):
            return ShardSource(str(path), **_options("shards", text, options))
        if holds_audio_only(path):
            return AudioFolderSource(path, **_options("audio", text, options))
        return ImageFolderSource(path, **_options("folder", text, options))
    if path.is_file():
        raise ConfigError(f"data source {text}: a file, but not a caption table (.csv, .tsv, .jsonl) nor a tar shard")
    raise UnknownNameError(
        f"data source {text!r}: not a built-in name ({', '.join(sorted(SOURCES))}) nor an existing path"
    )


_KIND_WORDS = {"folder": "an image folder", "table": "a caption table", "shards": "tar shards", "audio": "an audio folder",
               "audio_table": "an audio caption table"}


def _everyone() -> list[tuple[str, Callable]]:
    return list(SOURCES.items()) + list(_PATH_KINDS.items())


def _options(kind: str, path: str, options: dict) -> dict:
    """The options a path source of `kind` takes (see zir.data.options.check_options)."""
    return check_options(f"{_KIND_WORDS[kind]} ({path})", _PATH_KINDS[kind], options, _everyone())
