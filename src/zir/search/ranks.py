"""`torchrun ... -m zir embed`: each rank embeds every world_size-th place of the source into its own store
(`INDEX/rank-R-of-W/`, resumable like any embed), and rank 0 merges the finished stores into `INDEX` in the
source's order and builds the one vector index. No process group is needed: rank 0 waits for the other
stores to say they are complete (torchrun stops every rank when one fails).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from zir.errors import ConfigError
from zir.search.store import STORE_FILE, ItemStore

_COLUMNS = "pos, key, path, caption, sha1, thumb, image_vec, feature_vec, caption_vec"


def rank_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be whole numbers (torchrun sets them)") from None
    if not 0 <= rank < max(world, 1):
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, max(world, 1)


def rank_folder(out: Path, rank: int, world: int) -> Path:
    """Where one rank's share of the embed is stored."""
    return Path(out) / f"rank-{rank}-of-{world}"


def merge_ranks(out: Path, world: int, poll_s: float = 0.2, timeout_s: float | None = None) -> ItemStore:
    """Wait until every rank's store is complete, then copy their items into `out`'s store in source order."""
    folders = [rank_folder(out, r, world) for r in range(world)]
    started = time.monotonic()
    while not all(_complete(f) for f in folders):
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            missing = [str(f) for f in folders if not _complete(f)]
            raise ConfigError(f"embed ranks not finished after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(poll_s)
    metas = [_meta(f) for f in folders]
    store = ItemStore(out, create=True)
    if store.count():
        return store  # merged before (a rerun of a finished embed)
    union = " UNION ALL ".join(f"SELECT {_COLUMNS} FROM r{r}.items" for r in range(world))
    for r, folder in enumerate(folders):
        store.db.execute(f"ATTACH DATABASE ? AS r{r}", (str(folder / STORE_FILE),))
    with store.db:
        store.db.execute(f"INSERT INTO items (id, {_COLUMNS}) SELECT ROW_NUMBER() OVER (ORDER BY pos) - 1, {_COLUMNS} "
                         f"FROM ({union})")
    for r in range(world):
        store.db.execute(f"DETACH DATABASE r{r}")
    first = metas[0]
    store.set_meta(**{k: v for k, v in first.items() if k not in ("next_pos", "skipped", "items", "complete")},
                   skipped=sum(int(m.get("skipped", 0)) for m in metas), ranks=world, complete=False)
    return store


def _meta(folder: Path) -> dict:
    store = ItemStore(folder)
    try:
        return store.meta()
    finally:
        store.close()


def _complete(folder: Path) -> bool:
    if not (folder / STORE_FILE).is_file():
        return False
    try:
        return bool(_meta(folder).get("complete"))
    except (ConfigError, sqlite3.Error):
        return False  # being written
