"""The item store of an index: one SQLite file with every embedded item and the embed's progress.

SQLite (Python's own `sqlite3`) because an embed must survive being interrupted: each batch's rows and the
position the embed reached are written in one transaction, so a killed process leaves either the whole
batch or none of it, and `pos` (the item's place in the source's order) is UNIQUE, so a resumed embed can
never store an item twice. Vectors are float32 blobs; the vector index (`index.py`) is built from them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zir.errors import ConfigError

STORE_FILE = "items.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,          -- 0, 1, 2, ... in embedding order: the item's row in the vector index
    pos INTEGER NOT NULL UNIQUE,     -- its place in the source's order (bad samples take a place too)
    key TEXT NOT NULL,
    path TEXT,                       -- the file, when the source reads files (folders, caption tables)
    caption TEXT,
    sha1 TEXT NOT NULL,              -- of the decoded pixels: exact duplicates whatever the file format
    thumb BLOB NOT NULL,             -- a small JPEG, so reports and the page need no original file
    image_vec BLOB NOT NULL,         -- the search space: joint image-text space, else the pooled features
    feature_vec BLOB NOT NULL,       -- the image tower's pooled features, unit length (near-duplicates)
    caption_vec BLOB
);
"""


@dataclass
class Item:
    """One stored item (vectors left out: read them in bulk with `ItemStore.vectors`)."""

    id: int
    key: str
    path: str | None
    caption: str | None
    sha1: str

    @property
    def shown(self) -> str:
        """What a listing prints for it: the file when there is one, else the source's key."""
        return self.path or self.key


class ItemStore:
    """Read and append items and progress of one index folder."""

    def __init__(self, folder: str | Path, create: bool = False):
        self.folder = Path(folder)
        path = self.folder / STORE_FILE
        if not create and not path.is_file():
            what = "does not exist" if not self.folder.exists() else f"has no {STORE_FILE}"
            raise ConfigError(f"index {self.folder} {what}; make one with zir embed RUN SOURCE --out {self.folder}")
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False)  # the page answers on its own thread
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"index {self.folder}: {STORE_FILE} is not a readable SQLite file ({err})") from None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # -- progress and description -------------------------------------------------------------------
    def meta(self) -> dict:
        """Everything recorded about the embed (run, source, space, dim, next_pos, complete, ...)."""
        return {k: json.loads(v) for k, v in self.db.execute("SELECT name, value FROM meta")}

    def set_meta(self, **values) -> None:
        """Record values (committed with the next batch, or now when called outside one)."""
        with self.db:
            self._put_meta(values)

    def _put_meta(self, values: dict) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in values.items()])

    def add_batch(self, rows: list[dict], next_pos: int, **meta) -> None:
        """Append one batch of items, move the embed's position to `next_pos` and record `meta` (counts), in one
        transaction."""
        start = self.count()
        with self.db:
            self.db.executemany(
                "INSERT INTO items (id, pos, key, path, caption, sha1, thumb, image_vec, feature_vec, caption_vec) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(start + i, r["pos"], r["key"], r["path"], r["caption"], r["sha1"], r["thumb"],
                  _blob(r["image_vec"]), _blob(r["feature_vec"]), None if r["caption_vec"] is None else _blob(r["caption_vec"]))
                 for i, r in enumerate(rows)])
            self._put_meta({**meta, "next_pos": next_pos})

    # -- reading --------------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of stored items."""
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def items(self, ids=None) -> list[Item]:
        """Items in id order (all, or those of `ids`, in the order given)."""
        cols = "id, key, path, caption, sha1"
        if ids is None:
            return [Item(*r) for r in self.db.execute(f"SELECT {cols} FROM items ORDER BY id")]
        found = {r[0]: Item(*r) for r in self.db.execute(
            f"SELECT {cols} FROM items WHERE id IN ({','.join('?' * len(ids))})", [int(i) for i in ids])}
        return [found[int(i)] for i in ids if int(i) in found]

    def vectors(self, column: str = "image_vec") -> np.ndarray:
        """(N, D) float32 of every item in id order: `image_vec` (the search space), `feature_vec` (pooled
        features) or `caption_vec` (NaN rows where an item has no caption)."""
        if column not in ("image_vec", "feature_vec", "caption_vec"):
            raise ValueError(column)
        rows = self.db.execute(f"SELECT id, {column} FROM items ORDER BY id").fetchall()
        dim = next((len(blob) // 4 for _, blob in rows if blob is not None), 0)
        out = np.full((len(rows), dim), np.nan, dtype=np.float32)
        for i, blob in rows:
            if blob is not None:
                out[i] = np.frombuffer(blob, dtype=np.float32)
        return out

    def vector(self, item_id: int) -> np.ndarray:
        """The image vector of one item; ConfigError when there is no such item."""
        row = self.db.execute("SELECT image_vec FROM items WHERE id = ?", (int(item_id),)).fetchone()
        if row is None:
            raise ConfigError(f"index {self.folder} has no item {item_id} (it holds {self.count()})")
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def thumb(self, item_id: int) -> bytes | None:
        """The JPEG thumbnail of one item, or None."""
        row = self.db.execute("SELECT thumb FROM items WHERE id = ?", (int(item_id),)).fetchone()
        return None if row is None else bytes(row[0])

    def positions(self) -> list[int]:
        """Every stored item's place in the source order (a resumed embed's check for duplicates)."""
        return [r[0] for r in self.db.execute("SELECT pos FROM items ORDER BY id")]


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
