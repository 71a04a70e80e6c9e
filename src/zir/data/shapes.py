"""`shapes`: a procedural captioned dataset generated from a seed, for demos, tests and compositional probes.

Each image (default 64x64 RGB) holds one to three non-overlapping objects on a tinted background. An object
has a shape, a colour, a size and a position on a 3x3 grid of cells (jittered inside its cell), so
relations such as "to the left of" are always well defined. Captions come from a small grammar with
synonyms, locations and relations; every image gets several. Labels: the shape, colour and size of each
object, the object count, and multi-hot presence of shapes and colours.

Splits: `train`, `val` and `test` never contain the held-out (shape, colour) pairs in `HELD_OUT`; the
`comp` split is made only of objects with those pairs, to measure compositional generalisation.

Images are rendered with numpy in chunks of `CHUNK` images, each chunk from its own seed
`(seed, split, chunk)`, so the first n images of a split do not depend on how many are asked for.
Rendering is vectorised over a chunk and uses signed distances for anti-aliased edges.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zir.data.paths import cache_dir as _cache_dir
from zir.errors import ConfigError, UnknownNameError

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
SIZES = ("small", "large")
COUNTS = ("one", "two", "three")
SPLITS = ("train", "val", "test", "comp")
# (shape, colour) pairs kept out of train/val/test: every shape once, five of the six colours once each,
# so each shape and each colour is still seen in training, only never together.
HELD_OUT = (("circle", "green"), ("square", "blue"), ("triangle", "yellow"), ("diamond", "red"), ("cross", "purple"))
DEFAULT_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000, "comp": 1_000}
CHUNK = 1_000
MAX_OBJECT_SCALE = 2.5  # a large object at 2.5x spans 84% of the side
VERSION = 1  # bump when rendering or captions change, so old caches are not reused

_RGB = np.array(
    [[220, 45, 45], [45, 175, 70], [45, 85, 225], [235, 205, 40], [150, 65, 200], [40, 195, 205]], dtype=np.float32
)
_SPLIT_ID = {name: i for i, name in enumerate(SPLITS)}
_ARRAYS = ("images", "shape", "colour", "size", "cell", "center", "radius", "count")

_SHAPE_WORDS = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
_COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet"), "cyan": ("cyan", "turquoise")}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_ROW_WORDS = ("top", "middle", "bottom")
_COL_WORDS = ("left", "center", "right")
_REL_WORDS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_COUNT_NOUNS = ("shapes", "objects")


class ShapesCaptions(Sequence):
    """The captions of a split, one list of strings per image, written on demand from the image's attributes."""

    def __init__(self, data: "ShapesData", seed: int, split: str, per_image: int):
        self._data, self._seed, self._split, self._k = data, int(seed), split, int(per_image)

    def __len__(self) -> int:
        """Number of images."""
        return len(self._data.count)

    def __getitem__(self, i):
        """The captions of image i (a list of strings), or of each image in a slice."""
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        d = self._data
        # one generator per image, so captions do not depend on which images were asked for before
        r = random.Random((self._seed * 1_000_003 + _SPLIT_ID[self._split]) * 100_000_007 + i * 7 + VERSION)
        return _captions_for(
            r, d.shape[i].tolist(), d.colour[i].tolist(), d.size[i].tolist(), d.cell[i].tolist(), int(d.count[i]), self._k
        )


@dataclass
class ShapesData:
    """One generated split: images (N, H, W, 3) uint8, per-object attributes (N, 3) with -1 padding, captions."""

    images: np.ndarray
    shape: np.ndarray  # (N, 3) int8 index into SHAPES, -1 where no object
    colour: np.ndarray  # (N, 3) int8 index into COLOURS
    size: np.ndarray  # (N, 3) int8 index into SIZES
    cell: np.ndarray  # (N, 3) int8 grid cell row * 3 + col
    center: np.ndarray  # (N, 3, 2) float32 (x, y) in [0, 1]
    radius: np.ndarray  # (N, 3) float32, fraction of the image side
    count: np.ndarray  # (N,) int8, number of objects (1..3)
    seed: int = 0
    split: str = "train"
    captions_per_image: int = 5
    captions: ShapesCaptions = field(init=False, repr=False)

    def __post_init__(self):
        self.captions = ShapesCaptions(self, self.seed, self.split, self.captions_per_image)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)


def _held_out_mask() -> np.ndarray:
    held = np.zeros((len(SHAPES), len(COLOURS)), dtype=bool)
    for s, c in HELD_OUT:
        held[SHAPES.index(s), COLOURS.index(c)] = True
    return held


def _sample_layout(rng: np.random.Generator, n: int, split: str, objects: tuple[int, int], scale: float = 1.0):
    """Draw the attributes of n images: counts, cells, shapes, colours, sizes, centres and radii."""
    lo, hi = objects
    count = rng.integers(lo, hi + 1, size=n)
    # distinct cells per image: the first `count` entries of a random permutation of the 9 cells
    cells = np.argsort(rng.random((n, 9)), axis=1)[:, :3]
    present = np.arange(3)[None, :] < count[:, None]
    held = _held_out_mask()
    pairs = np.argwhere(held if split == "comp" else ~held)  # (P, 2) allowed (shape, colour) pairs
    pick = pairs[rng.integers(0, len(pairs), size=(n, 3))]
    shape, colour = pick[..., 0], pick[..., 1]
    size = rng.integers(0, 2, size=(n, 3))
    # radius as a fraction of the side; large objects nearly fill their cell, small ones move about in it
    radius = np.where(size == 1, rng.uniform(0.125, 0.15, (n, 3)), rng.uniform(0.075, 0.095, (n, 3)))
    cell_w = 1.0 / 3.0
    slack = np.maximum(cell_w / 2 - radius * 1.08 - 0.01, 0.0)
    jitter = rng.uniform(-1.0, 1.0, (n, 3, 2)) * slack[..., None]
    row, col = cells // 3, cells % 3
    center = np.stack([(col + 0.5) * cell_w, (row + 0.5) * cell_w], axis=-1) + jitter
    if scale != 1.0:
        # larger objects (one per image): pull each centre toward the middle just enough that the object stays
        # inside the picture, so left stays left and top stays top and the location captions still hold
        reach = 0.5 - 1.08 * radius - 0.01  # how far from the middle a centre could lie at scale 1
        radius = radius * scale
        center = 0.5 + (center - 0.5) * (np.maximum(0.5 - 1.12 * radius - 0.01, 0.0) / reach)[..., None]
    neg = ~present
    # the look of each image (background grey, tint, gradient; colour jitter per object) is drawn here too,
    # for a full chunk at once, so that rendering a prefix draws nothing of its own
    look = dict(
        _grey=rng.uniform(25.0, 185.0, n).astype(np.float32),
        _tint=rng.uniform(-12.0, 12.0, (n, 3)).astype(np.float32),
        _slope=rng.uniform(-20.0, 20.0, n).astype(np.float32),
        _jitter=rng.uniform(-14.0, 14.0, (n, 3, 3)).astype(np.float32),
    )
    return look | dict(
        count=count.astype(np.int8),
        shape=np.where(neg, -1, shape).astype(np.int8),
        colour=np.where(neg, -1, colour).astype(np.int8),
        size=np.where(neg, -1, size).astype(np.int8),
        cell=np.where(neg, -1, cells).astype(np.int8),
        center=np.where(neg[..., None], -1.0, center).astype(np.float32),
        radius=np.where(neg, 0.0, radius).astype(np.float32),
    )


def shapes_sdf(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) of M objects of shape index `shape` (M,) at offsets dx (M, 1, W),
    dy (M, H, 1) from their centres, radius r (M, 1, 1): (M, H, W). The images' edges and the masks' come from it."""
    sdf = np.empty((len(shape), dy.shape[1], dx.shape[2]), dtype=np.float32)
    for s, name in enumerate(SHAPES):
        sel = np.nonzero(shape == s)[0]
        if sel.size == 0:
            continue
        ax, ay, rs = np.abs(dx[sel]), np.abs(dy[sel]), r[sel]
        if name == "circle":
            d = np.sqrt(dx[sel] ** 2 + dy[sel] ** 2) - rs
        elif name == "square":
            d = np.maximum(ax, ay) - 0.84 * rs
        elif name == "triangle":
            # pointing up; centroid at the centre; y grows downwards
            edge = np.maximum(dy[sel], 0.866 * ax - 0.5 * dy[sel])
            d = edge - 0.5 * (1.12 * rs)
            d = d + 0.0 * ax  # broadcast to (M, H, W)
        elif name == "diamond":
            d = (ax + ay - 1.12 * rs) * 0.7071
        else:  # cross
            t = 0.34 * rs
            d = np.minimum(np.maximum(ax - rs, ay - t), np.maximum(ax - t, ay - rs))
        sdf[sel] = d
    return sdf


def _render(lay: dict, side: int) -> np.ndarray:
    """Paint the images of one chunk: (N, side, side, 3) uint8."""
    n = len(lay["count"])
    # background: a grey level with a slight tint and a vertical gradient, built as one column per image
    grey, tint, slope = lay["_grey"][:, None, None], lay["_tint"][:, None, :], lay["_slope"][:, None, None]
    ramp = (np.arange(side, dtype=np.float32) / side - 0.5).reshape(1, side, 1)
    column = np.clip(grey + tint + slope * ramp + 0.5, 0.0, 255.0).astype(np.uint8)  # (N, side, 3)
    img = np.broadcast_to(column[:, :, None, :], (n, side, side, 3)).copy()
    colours = _RGB[np.clip(lay["colour"], 0, None)] + lay["_jitter"]

    big = max(0.15, float(lay["radius"].max(initial=0.0)))
    win = int(np.ceil(2 * big * side * 1.12)) + 3  # window that holds the largest object with its edge
    win = min(win, side)
    offs = np.arange(win, dtype=np.float32) + 0.5
    for k in range(3):
        idx = np.nonzero(lay["shape"][:, k] >= 0)[0]
        if idx.size == 0:
            continue
        cx = lay["center"][idx, k, 0] * side
        cy = lay["center"][idx, k, 1] * side
        r = lay["radius"][idx, k] * side
        x0 = np.clip(np.floor(cx - win / 2).astype(np.int64), 0, side - win)
        y0 = np.clip(np.floor(cy - win / 2).astype(np.int64), 0, side - win)
        dx = (x0[:, None].astype(np.float32) + offs[None, :] - cx[:, None])[:, None, :]  # (M, 1, win)
        dy = (y0[:, None].astype(np.float32) + offs[None, :] - cy[:, None])[:, :, None]  # (M, win, 1)
        rr = r[:, None, None]
        sdf = shapes_sdf(lay["shape"][idx, k], dx, dy, rr)
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]  # (M, win, win, 1)
        ys = y0[:, None] + np.arange(win)[None, :]  # (M, win)
        xs = x0[:, None] + np.arange(win)[None, :]
        where = (idx[:, None, None], ys[:, :, None], xs[:, None, :])
        patch = img[where].astype(np.float32)  # (M, win, win, 3)
        col = np.clip(colours[idx, k], 0.0, 255.0)[:, None, None, :]
        img[where] = (patch + alpha * (col - patch) + 0.5).astype(np.uint8)
    return img


def _pick(r: random.Random, options):
    # random.choice costs several microseconds a call; this is the same draw at a tenth of the price
    return options[int(r.random() * len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(r: random.Random, s: int, c: int, z: int) -> str:
    shape = _pick(r, _SHAPE_WORDS[SHAPES[s]])
    colour = _pick(r, _COLOUR_WORDS[COLOURS[c]])
    u = r.random()
    if u < 0.6:
        words = [_pick(r, _SIZE_WORDS[SIZES[z]]), colour, shape]
    elif u < 0.9:
        words = [colour, shape]
    else:
        words = [colour, shape] if r.random() < 0.5 else [_pick(r, _SIZE_WORDS[SIZES[z]]), colour, shape]
    return f"{_article(words[0])} {' '.join(words)}"


def _location(r: random.Random, cell: int) -> str:
    row, col = divmod(cell, 3)
    if row == 1 and col == 1:
        return _pick(r, ("in the middle", "in the center"))
    if row == 1:
        return _pick(r, (f"on the {_COL_WORDS[col]}", f"at the {_COL_WORDS[col]}"))
    if col == 1:
        return _pick(r, (f"at the {_ROW_WORDS[row]}", f"near the {_ROW_WORDS[row]}"))
    return _pick(r, (f"in the {_ROW_WORDS[row]} {_COL_WORDS[col]}", f"in the {_ROW_WORDS[row]} {_COL_WORDS[col]} corner"))


def _relation(r: random.Random, cell_a: int, cell_b: int) -> str:
    (ra, ca), (rb, cb) = divmod(cell_a, 3), divmod(cell_b, 3)
    true = []
    if ca != cb:
        true.append("left" if ca < cb else "right")
    if ra != rb:
        true.append("above" if ra < rb else "below")
    return _pick(r, _REL_WORDS[_pick(r, true)])


def _captions_for(r: random.Random, shape, colour, size, cell, count: int, k: int) -> list[str]:
    """k captions for one image, each a fresh draw of template, object order and synonyms."""
    out = []
    objs = list(range(count))
    for _ in range(k):
        r.shuffle(objs)
        nps = [_noun_phrase(r, shape[i], colour[i], size[i]) for i in objs]
        t = r.random()
        if count == 1:
            a = objs[0]
            if t < 0.3:
                cap = nps[0]
            elif t < 0.6:
                cap = f"{nps[0]} {_location(r, cell[a])}"
            elif t < 0.8:
                cap = f"{_pick(r, ('a picture of', 'an image of', 'there is'))} {nps[0]} {_location(r, cell[a])}"
            else:
                cap = f"{_pick(r, ('a picture of', 'an image of', 'one shape:'))} {nps[0]}"
        elif count == 2:
            a, b = objs
            if t < 0.45:
                cap = f"{nps[0]} {_relation(r, cell[a], cell[b])} {nps[1]}"
            elif t < 0.65:
                cap = f"{nps[0]} and {nps[1]}"
            elif t < 0.85:
                cap = f"two {_pick(r, _COUNT_NOUNS)}: {nps[0]} and {nps[1]}"
            else:
                cap = f"{nps[0]} {_location(r, cell[a])} and {nps[1]} {_location(r, cell[b])}"
        else:
            a, b, c = objs
            if t < 0.35:
                cap = f"{nps[0]} {_relation(r, cell[a], cell[b])} {nps[1]}, and {nps[2]}"
            elif t < 0.6:
                cap = f"{nps[0]}, {nps[1]} and {nps[2]}"
            elif t < 0.85:
                cap = f"three {_pick(r, _COUNT_NOUNS)}: {nps[0]}, {nps[1]} and {nps[2]}"
            else:
                cap = f"{nps[0]} {_relation(r, cell[a], cell[b])} {nps[1]}, with {nps[2]} {_location(r, cell[c])}"
        out.append(cap)
    return out


def _chunk_seed(seed: int, split: str, chunk: int) -> list[int]:
    return [int(seed), _SPLIT_ID[split], int(chunk), VERSION]


def generate_shapes(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    size: int = 64,
    objects: tuple[int, int] = (1, 3),
    captions_per_image: int = 5,
    object_scale: float = 1.0,
) -> ShapesData:
    """Render n images of one split from a seed (no cache); the same arguments always give the same data.

    `object_scale` > 1 draws the (single) object that many times larger, for a shape task that small towers
    learn in a few hundred steps: at 32x32 the default objects are 5-10 pixels across.
    """
    if split not in _SPLIT_ID:
        raise UnknownNameError(f"shapes split {split!r}: expected one of {', '.join(SPLITS)}")
    lo, hi = objects
    if not (1 <= lo <= hi <= 3):
        raise ConfigError(f"shapes objects={objects}: expected 1 <= min <= max <= 3")
    if size < 16:
        raise ConfigError(f"shapes size={size}: expected at least 16 pixels")
    if not 1.0 <= object_scale <= MAX_OBJECT_SCALE:
        raise ConfigError(f"shapes object_scale={object_scale}: expected a number from 1 to {MAX_OBJECT_SCALE}")
    if object_scale != 1.0 and hi != 1:
        raise ConfigError(f"shapes object_scale={object_scale} with objects={objects}: larger objects would overlap; "
                          "use objects=[1, 1]")
    if n < 0 or captions_per_image < 1:
        raise ConfigError(f"shapes n={n}, captions_per_image={captions_per_image}: expected n >= 0 and >= 1 caption")
    meta = dict(seed=seed, split=split, captions_per_image=captions_per_image)
    parts = []
    for chunk in range((n + CHUNK - 1) // CHUNK):
        m = min(CHUNK, n - chunk * CHUNK)
        rng = np.random.default_rng(_chunk_seed(seed, split, chunk))
        # always draw a full chunk's layout so a prefix of a split does not depend on n
        lay = _sample_layout(rng, CHUNK, split, objects, object_scale)
        lay = {key: val[:m] for key, val in lay.items()}
        parts.append((_render(lay, size), lay))
    if not parts:
        empty = _sample_layout(np.random.default_rng(0), 0, split, objects)
        return ShapesData(images=np.zeros((0, size, size, 3), np.uint8), **{k: empty[k] for k in _ARRAYS[1:]}, **meta)
    lay = {key: np.concatenate([p[1][key] for p in parts]) for key in _ARRAYS[1:]}
    return ShapesData(images=np.concatenate([p[0] for p in parts]), **lay, **meta)


def _cache_key(split: str, n: int, seed: int, size: int, objects, captions_per_image: int, object_scale: float) -> str:
    scale = "" if object_scale == 1.0 else f"-x{object_scale:g}"
    return f"v{VERSION}-s{seed}-{size}px-o{objects[0]}{objects[1]}{scale}-{split}-{n}"


def load_shapes(
    split: str = "train",
    *,
    n: int | None = None,
    seed: int = 0,
    size: int = 64,
    objects: tuple[int, int] = (1, 3),
    captions_per_image: int = 5,
    object_scale: float = 1.0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ShapesData:
    """One split of `shapes`, generated on first use and read from the cache (~/.cache/zir/shapes) afterwards."""
    if split not in _SPLIT_ID:
        raise UnknownNameError(f"shapes split {split!r}: expected one of {', '.join(SPLITS)}")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    objects = (int(objects[0]), int(objects[1]))
    try:
        object_scale = float(object_scale)
    except (TypeError, ValueError):
        raise ConfigError(f"shapes object_scale={object_scale!r}: expected a number from 1 to {MAX_OBJECT_SCALE}") from None
    args = dict(split=split, seed=seed, size=size, objects=objects, captions_per_image=captions_per_image,
                object_scale=object_scale)
    if not use_cache:
        return generate_shapes(n, **args)
    meta = dict(seed=seed, split=split, captions_per_image=captions_per_image)
    key = _cache_key(split, n, seed, size, objects, captions_per_image, object_scale)
    try:
        path = _cache_dir(cache_dir) / "shapes" / f"{key}.npz"
    except OSError:  # no writable cache (read-only home, say): generating is fast enough to do every time
        path = None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                arrays = {name: z[name] for name in _ARRAYS}
            if len(arrays["images"]) == n:
                return ShapesData(**arrays, **meta)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply generated again
    data = generate_shapes(n, **args)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # write under a temporary name and rename, so a reader in another process never sees half a file
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                # compressed: flat backgrounds shrink 30x (10,000 images: 4 MB, not 123 MB); loading costs the same
                np.savez_compressed(f, **{name: getattr(data, name) for name in _ARRAYS})
            os.chmod(f.name, 0o644)
            os.replace(f.name, path)
        except OSError:
            pass  # a full or read-only disk only costs the next run a regeneration
    return data


def class_names(task: str = "shape") -> tuple[str, ...]:
    """The class names of a shapes label: 'shape', 'colour', 'size' or 'count'."""
    table = {"shape": SHAPES, "colour": COLOURS, "color": COLOURS, "size": SIZES, "count": COUNTS}
    if task not in table:
        raise UnknownNameError(f"shapes label {task!r}: expected one of shape, colour, size, count")
    return table[task]


def named_in(caption: str, task: str = "shape") -> set[int]:
    """The classes of `task` ('shape' or 'colour') that a caption names, synonyms included ("a violet disk" ->
    purple, circle): how generated captions are scored against an image's labels."""
    key = {"color": "colour"}.get(task, task)
    words = {"shape": _SHAPE_WORDS, "colour": _COLOUR_WORDS}.get(key)
    if words is None:
        raise UnknownNameError(f"shapes label {task!r} for captions: expected shape or colour")
    return {k for k, names in enumerate(words.values()) if any(re.search(rf"\b{w}\b", caption) for w in names)}


def labels(data: ShapesData, task: str = "shape") -> np.ndarray:
    """Per-image class labels (N,): the first object's shape/colour/size, or the object count minus one."""
    if task == "count":
        return data.count.astype(np.int64) - 1
    key = {"color": "colour"}.get(task, task)
    if key not in ("shape", "colour", "size"):
        raise UnknownNameError(f"shapes label {task!r}: expected one of shape, colour, size, count")
    return getattr(data, key)[:, 0].astype(np.int64)


def presence(data: ShapesData, task: str = "shape") -> np.ndarray:
    """Multi-hot presence (N, classes) of each shape or colour anywhere in the image."""
    key = {"color": "colour"}.get(task, task)
    if key not in ("shape", "colour"):
        raise UnknownNameError(f"shapes presence {task!r}: expected shape or colour")
    values = getattr(data, key)
    k = len(SHAPES if key == "shape" else COLOURS)
    out = np.zeros((len(values), k), dtype=bool)
    rows, slots = np.nonzero(values >= 0)
    out[rows, values[rows, slots]] = True
    return out
