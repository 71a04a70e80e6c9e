"""`zir dedup INDEX --out DIR`: exact duplicates, near-duplicates and mismatched captions of an index.

- exact: items whose decoded pixels hash alike (`embed.pixel_hash`), whatever their file format;
- near: SemDeDup (Abbas et al. 2023): k-means of the image embeddings (about sqrt(N) clusters), then within
  each cluster, in id order, an item whose most similar earlier item reaches cosine `threshold` is a
  duplicate of it. Comparing within clusters keeps the cost near N * sqrt(N) rather than N^2. The space is
  the image tower's pooled features by default (`space="features"`), or the search space (`"search"`);
- caption: items whose image-caption similarity is a low outlier (below the median by more than `caption_z`
  robust standard deviations, 1.4826 x the median absolute deviation): likely a caption of another picture.

Each duplicate group keeps its first item (lowest id, the source's order) and marks the rest `drop`; caption
outliers are marked `check`. Nothing is deleted: the CSV says what to drop and the HTML report shows it.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zir.errors import ConfigError
from zir.search.faiss_lib import faiss
from zir.search.store import ItemStore

NEAR_THRESHOLD = 0.995  # planted copies through the demo run: precision 0.93, recall 0.71 (docs/search.md)
CAPTION_Z = 3.0
SPACES = {"features": "feature_vec", "search": "image_vec"}  # near-duplicates in which embedding
CSV_FILE, HTML_FILE = "duplicates.csv", "report.html"


@dataclass
class Group:
    """Items found together: `kind` exact, near or caption; ids best kept first; score: the weakest link."""

    kind: str
    ids: list[int]
    score: float


def exact_groups(hashes: list[str]) -> list[Group]:
    """Groups of items with the same pixel hash."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    return [Group("exact", ids, 1.0) for ids in by_hash.values() if len(ids) > 1]


def near_groups(vectors: np.ndarray, threshold: float = NEAR_THRESHOLD, clusters: int | None = None,
                seed: int = 0) -> list[Group]:
    """SemDeDup groups of (N, D) unit-length vectors: within each k-means cluster, in id order, an item whose
    most similar earlier item reaches `threshold` joins that item's group (as SemDeDup drops it)."""
    n = len(vectors)
    if n < 2:
        return []
    k = min(n, clusters or max(1, int(round(np.sqrt(n)))))
    assignment = _clusters(vectors, k, seed)
    head = list(range(n))  # the group each item belongs to, named by its first item
    weakest: dict[int, float] = {}
    for c in np.unique(assignment):
        members = np.flatnonzero(assignment == c)  # ascending ids
        if len(members) < 2:
            continue
        sims = vectors[members] @ vectors[members].T
        np.fill_diagonal(sims, -np.inf)
        sims[np.triu_indices(len(members))] = -np.inf  # compare each item with earlier ones only
        best = sims.argmax(axis=1)
        for j in range(1, len(members)):
            score = float(sims[j, best[j]])
            if score >= threshold:
                first = head[int(members[best[j]])]
                head[int(members[j])] = first
                weakest[first] = min(weakest.get(first, 1.0), score)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[head[i]].append(i)
    return [Group("near", ids, weakest[first]) for first, ids in groups.items() if len(ids) > 1]


def _clusters(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The k-means cluster of each row (spherical k-means: the vectors are directions)."""
    if k == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    lib = faiss()
    km = lib.Kmeans(vectors.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False,
                    min_points_per_centroid=1)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    km.train(data)
    _, assignment = km.index.search(data, 1)
    return assignment[:, 0]


def caption_outliers(image_vecs: np.ndarray, caption_vecs: np.ndarray, z: float = CAPTION_Z) -> list[Group]:
    """One group per item whose image-caption similarity sits more than `z` robust deviations below the median."""
    if caption_vecs.ndim != 2 or caption_vecs.shape[1] != image_vecs.shape[1]:
        return []  # no item has a caption
    has = ~np.isnan(caption_vecs).any(axis=1)
    if has.sum() < 3:
        return []
    sims = np.full(len(image_vecs), np.nan)
    sims[has] = np.einsum("nd,nd->n", image_vecs[has], caption_vecs[has])
    med = np.median(sims[has])
    spread = 1.4826 * np.median(np.abs(sims[has] - med)) or 1e-6
    low = np.flatnonzero(has & (sims < med - z * spread))
    return [Group("caption", [int(i)], float(sims[i])) for i in low[np.argsort(sims[low])]]


def find_duplicates(folder: str | os.PathLike, threshold: float = NEAR_THRESHOLD, caption_z: float = CAPTION_Z,
                    clusters: int | None = None, space: str = "features") -> tuple[ItemStore, list[Group]]:
    """The index's groups: exact, then near (those not already an exact group), then caption outliers."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: expected a cosine similarity in (0, 1]")
    store = ItemStore(folder)
    meta = store.meta()
    if not meta.get("complete"):
        raise ConfigError(f"index {folder} is not complete: rerun its zir embed to finish it first")
    if space not in SPACES:
        raise ConfigError(f"--space {space!r}: expected one of {', '.join(SPACES)}")
    items = store.items()
    vectors = store.vectors(SPACES[space])
    exact = exact_groups([it.sha1 for it in items])
    dropped = {i for g in exact for i in g.ids[1:]}  # an exact copy is listed once, in its exact group
    near = [Group("near", ids, g.score) for g in near_groups(vectors, threshold, clusters)
            if len(ids := [i for i in g.ids if i not in dropped]) > 1]
    captions = caption_outliers(store.vectors(), store.vectors("caption_vec"), caption_z) if meta.get("has_text") else []
    return store, exact + near + captions


def write_csv(store: ItemStore, groups: list[Group], out: Path) -> Path:
    """One row per item of a group: group, kind, action (keep, drop, check), id, key, path, caption, score."""
    items = {it.id: it for it in store.items(sorted({i for g in groups for i in g.ids}))} if groups else {}
    path = out / CSV_FILE
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["group", "kind", "action", "id", "key", "path", "caption", "score"])
        for n, group in enumerate(groups, 1):
            for j, i in enumerate(group.ids):
                action = "check" if group.kind == "caption" else ("keep" if j == 0 else "drop")
                it = items[i]
                writer.writerow([n, group.kind, action, i, it.key, it.path or "", it.caption or "",
                                 f"{group.score:.4f}"])
    return path


def dedup_index(folder: str | os.PathLike, out: str | os.PathLike, threshold: float = NEAR_THRESHOLD,
                caption_z: float = CAPTION_Z, clusters: int | None = None, space: str = "features") -> dict:
    """Find the groups, write DIR/duplicates.csv and DIR/report.html; returns counts and paths."""
    from zir.search.dedup_report import write_html

    out = Path(out)
    store, groups = find_duplicates(folder, threshold, caption_z, clusters, space)
    try:
        out.mkdir(parents=True, exist_ok=True)
        csv_path = write_csv(store, groups, out)
        html_path = write_html(store, groups, out / HTML_FILE, threshold)
        counts = {kind: sum(g.kind == kind for g in groups) for kind in ("exact", "near", "caption")}
        drop = sum(len(g.ids) - 1 for g in groups if g.kind != "caption")
        return {"csv": str(csv_path), "html": str(html_path), "groups": counts, "drop": drop, "items": store.count()}
    finally:
        store.close()
