"""`zir embed RUN SOURCE --out INDEX`: every image of a source (and its caption) through a run, resumably.

The source is read in its own order (shards unshuffled) one batch at a time; each batch's items and the
position reached are committed together to the item store (`store.py`), so an interrupted embed started
again with the same RUN and SOURCE continues after the last committed batch and stores no item twice.
When the source is exhausted the vector index is built from the store (`index.py`).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from zir.data.shards import ShardSource
from zir.data.sources import BadSample, CaptionTableSource, ImageFolderSource, MapSource, Sample, Source
from zir.errors import ConfigError
from zir.search.encoders import RunEncoder
from zir.search.index import EXACT_MAX, build_index, index_kind, write_index
from zir.search.ranks import merge_ranks, rank_folder, rank_world
from zir.search.store import ItemStore

THUMB_SIDE = 96


def embed_source(run_dir: str | os.PathLike, source_spec: str | Source, out: str | os.PathLike, *, batch_size: int = 64,
                 data_root=None, progress: bool | None = None, exact_max: int = EXACT_MAX,
                 encoder: RunEncoder | None = None) -> dict:
    """Embed `source_spec` (anything `zir.data.open_source` reads, or a Source) with the run into the index folder `out`.

    Returns {"index", "items", "skipped", "kind", "space", "resumed_at"}. A folder already holding another
    run's or source's embed is refused rather than mixed."""
    from zir.data import open_source

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 1")
    source = source_spec if isinstance(source_spec, Source) else open_source(source_spec, data_root=data_root)
    source_spec = source.name if isinstance(source_spec, Source) else source_spec
    encoder = encoder or RunEncoder(run_dir)
    rank, world = rank_world()
    store = ItemStore(out if world == 1 else rank_folder(Path(out), rank, world), create=True)
    try:
        start = _begin(store, encoder, source_spec, source)
        total = len(source) if isinstance(source, MapSource) else source.length
        skipped, dim = int(store.meta().get("skipped", 0)), int(store.meta().get("dim", 0))
        with _bar(progress, total, start, f"embedding {source.name}") as advance:
            for rows, next_pos, bad in _embedded_batches(encoder, source, start, batch_size, rank, world):
                skipped += bad
                if rows and not dim:
                    dim = len(rows[0]["image_vec"])
                    store.set_meta(dim=dim)
                store.add_batch(rows, next_pos, skipped=skipped)
                advance(next_pos)
        if world > 1:  # this rank's share is done; rank 0 merges every share into `out`
            store.set_meta(complete=True, items=store.count())
            if rank != 0:
                return {"index": str(store.folder), "items": store.count(), "skipped": skipped, "kind": "none",
                        "space": encoder.space, "resumed_at": start}
            store.close()
            store = merge_ranks(Path(out), world)
            skipped = int(store.meta().get("skipped", 0))
        if store.count() == 0:
            raise ConfigError(f"data {source.name}: no usable image to embed ({skipped} skipped)")
        index = build_index(store.vectors(), exact_max)
        write_index(index, store.folder)
        store.set_meta(complete=True, items=store.count())
        return {"index": str(store.folder), "items": store.count(), "skipped": skipped, "kind": index_kind(index),
                "space": encoder.space, "resumed_at": start}
    finally:
        store.close()


def _begin(store: ItemStore, encoder: RunEncoder, spec: str, source: Source) -> int:
    """Record what the embed is of (a new index) or check it is the same embed (a resumed one); its start."""
    meta = store.meta()
    this = {"run": str(encoder.run_dir), "source": str(spec), "step": encoder.run.step}
    if not meta:
        store.set_meta(**this, source_name=source.name, space=encoder.space, has_text=encoder.has_text,
                       dim=0, next_pos=0, complete=False, skipped=0)
        return 0
    for name, value in this.items():
        if meta.get(name) != value:
            raise ConfigError(f"index {store.folder} holds an embed of {name} {meta.get(name)!r}, not {value!r}; "
                              "choose another --out (an index is one run's embedding of one source)")
    return int(meta.get("next_pos", 0))


def _positions(source: Source, start: int, rank: int = 0, world: int = 1) -> Iterator[tuple[int, Sample | BadSample]]:
    """(place in the source order, sample or why it is unusable) from place `start` on, every `world`-th
    place from `rank` (torchrun: each rank its share; a stream is read whole by each, decoded whole)."""
    if isinstance(source, MapSource):
        for i in range(start, len(source)):
            if i % world != rank:
                continue
            try:
                yield i, source.get(i)
            except BadSample as bad:
                yield i, bad
            except Exception as err:  # noqa: BLE001 - one odd file must not stop an embed of thousands
                yield i, BadSample(f"{source.name}[{i}]", f"unexpected {type(err).__name__}: {err}")
    elif isinstance(source, ShardSource):
        for i, sample in enumerate(source.stream()):
            if i >= start and i % world == rank:
                yield i, sample
    else:
        raise ConfigError(f"data {source.name}: not a map-style or shard source")


def _embedded_batches(encoder: RunEncoder, source: Source, start: int, batch_size: int, rank: int = 0,
                      world: int = 1):
    """(rows, next position, number skipped) per batch of `batch_size` places."""
    chunk: list[tuple[int, Sample | BadSample]] = []
    for place in _positions(source, start, rank, world):
        chunk.append(place)
        if len(chunk) == batch_size:
            yield _embed_chunk(encoder, source, chunk)
            chunk = []
    if chunk:
        yield _embed_chunk(encoder, source, chunk)


def _embed_chunk(encoder: RunEncoder, source: Source, chunk: list) -> tuple[list[dict], int, int]:
    samples = [(pos, s) for pos, s in chunk if isinstance(s, Sample)]
    kept, skipped, pixels = encoder.prepare([s for _, s in samples], source)
    bad = len(chunk) - len(samples) + len(skipped)
    next_pos = chunk[-1][0] + 1
    if pixels is None:
        return [], next_pos, bad
    place = {id(s): pos for pos, s in samples}
    vectors, features = encoder.images_and_features(pixels)
    captions = [s.captions[0] if s.captions else None for s in kept]
    caption_vecs: list = [None] * len(kept)
    if encoder.has_text:
        with_text = [i for i, c in enumerate(captions) if c]
        if with_text:
            for i, vec in zip(with_text, encoder.texts([captions[i] for i in with_text])):
                caption_vecs[i] = vec
    rows = [{"pos": place[id(s)], "key": s.key, "path": file_path(source, s.key), "caption": cap,
             "sha1": pixel_hash(s.image), "thumb": thumbnail(s.image), "image_vec": vec, "feature_vec": feat,
             "caption_vec": cvec} for s, cap, vec, feat, cvec in zip(kept, captions, vectors, features, caption_vecs)]
    return rows, next_pos, bad


def file_path(source: Source, key: str) -> str | None:
    """The file an item was read from (folders, caption tables), absolute; None for built-ins and shards."""
    if isinstance(source, ImageFolderSource):
        return str((source.root / key).resolve())
    if isinstance(source, CaptionTableSource):
        return str((source.base / key).resolve())
    return None


def pixel_hash(image: np.ndarray) -> str:
    """SHA-1 of the decoded pixels and their shape: the same picture in any file format hashes alike."""
    image = np.ascontiguousarray(image)
    return hashlib.sha1(str(image.shape).encode() + image.tobytes()).hexdigest()


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """A JPEG no larger than side x side (aspect kept; small images enlarged, pixelated, to stay visible)."""
    img = Image.fromarray(image)
    scale = side / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.NEAREST if scale > 1 else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class _bar:
    """A rich progress bar over source places on a terminal (or when asked), nothing otherwise."""

    def __init__(self, enabled: bool | None, total: int | None, start: int, title: str):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.start, self.title = total, start, title

    def __enter__(self):
        if not self.enabled:
            return lambda pos: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task(self.title, total=self.total, completed=self.start)
        return lambda pos: self.bar.update(task, completed=pos)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False

