"""`zir search INDEX "text"` / `--image FILE`: the nearest items of an index, best first.

A `Searcher` holds an index folder's items, its vector index and the run that embedded it (loaded once:
the page of `server.py` keeps one for all its requests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zir.errors import ConfigError
from zir.search.index import index_kind, read_index, search_vectors
from zir.search.store import Item, ItemStore


@dataclass
class Hit:
    """One result: the item and its cosine similarity to the query."""

    item: Item
    score: float


class Searcher:
    """Search one index folder by text, image file, uploaded bytes or a stored item."""

    def __init__(self, folder: str | os.PathLike, encoder=None):
        self.folder = Path(folder)
        self.store = ItemStore(self.folder)
        self.meta = self.store.meta()
        self.index = read_index(self.folder)
        self._encoder = encoder

    @property
    def encoder(self):
        """The run's encoders, loaded on the first query that needs them."""
        if self._encoder is None:
            from zir.search.encoders import RunEncoder

            run = self.meta.get("run")
            if not run or not Path(run).is_dir():
                raise ConfigError(f"index {self.folder} was embedded with run {run!r}, which is no longer there; "
                                  "queries need that run's encoders")
            self._encoder = RunEncoder(run)
        return self._encoder

    @property
    def kind(self) -> str:
        """'exact' or 'hnsw'."""
        return index_kind(self.index)

    def text(self, query: str, k: int = 10) -> list[Hit]:
        """The k items nearest a text query."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the text query is empty: give some words, e.g. zir search INDEX \"a red circle\"")
        if not self.meta.get("has_text"):
            raise ConfigError(f"index {self.folder} was embedded by a run without an image-text objective, so it "
                              "has no text space; search it with --image FILE")
        return self.vector(self.encoder.texts([query.strip()])[0], k)

    def image_file(self, path: str | os.PathLike, k: int = 10) -> list[Hit]:
        """The k items nearest an image file."""
        if not Path(path).is_file():
            raise ConfigError(f"--image {path}: no such file")
        return self.vector(self.encoder.image_file(path), k)

    def image_bytes(self, data: bytes, k: int = 10) -> list[Hit]:
        """The k items nearest an uploaded image."""
        if not data:
            raise ConfigError("the uploaded image is empty")
        return self.vector(self.encoder.image_bytes(data), k)

    def similar(self, item_id: int, k: int = 10) -> list[Hit]:
        """The k items nearest a stored item (itself first)."""
        return self.vector(self.store.vector(item_id), k)

    def vector(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        """The k items nearest a query embedding."""
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"--k {k}: expected a whole number of at least 1")
        scores, ids = search_vectors(self.index, query, k)
        keep = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        items = self.store.items([i for i, _ in keep])
        return [Hit(item, score) for item, (_, score) in zip(items, keep)]

    def close(self) -> None:
        """Close the item store."""
        self.store.close()


def hit_lines(hits: list[Hit]) -> list[str]:
    """One line per hit, best first: rank, score, path or key, caption."""
    return [f"{rank:>3}  {hit.score:+.4f}  {hit.item.shown}" + (f"  ({hit.item.caption})" if hit.item.caption else "")
            for rank, hit in enumerate(hits, 1)]
