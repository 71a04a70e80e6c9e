"""The vector index of an index folder: faiss, exact below `EXACT_MAX` vectors and HNSW above.

faiss (faiss-cpu) over usearch and hnswlib, measured in docs/search.md: all three HNSW implementations
answered a query in 0.1-0.4 ms at recall@10 0.99-1.0 on 50,000 vectors, so speed did not decide; faiss also
gives the exact inner-product index, k-means (the clustering `dedup.py` needs) and a maintained on-disk
format in one library. Vectors are unit length, so inner product is cosine similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zir.errors import ConfigError
from zir.search.faiss_lib import faiss

INDEX_FILE = "images.faiss"
EXACT_MAX = 100_000  # flat search of 100k x 128 floats is ~3 ms a query on one core; HNSW above that
HNSW_M = 32          # neighbours per node: recall@10 >= 0.99 at ef_search 64 (benchmarks/search_recall.py)
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 64


def build_index(vectors: np.ndarray, exact_max: int = EXACT_MAX):
    """A faiss index over (N, D) unit-length rows: exact inner product when N <= exact_max, else HNSW."""
    lib = faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if len(vectors) <= exact_max:
        index = lib.IndexFlatIP(dim)
    else:
        index = lib.IndexHNSWFlat(dim, HNSW_M, lib.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(vectors)
    return index


def index_kind(index) -> str:
    """'exact' or 'hnsw', for listings and the page."""
    return "hnsw" if "HNSW" in type(index).__name__ else "exact"


def write_index(index, folder: Path) -> Path:
    """Write the index next to the item store (atomically: a half-written index is never read)."""
    path = Path(folder) / INDEX_FILE
    tmp = path.with_suffix(".faiss.tmp")
    faiss().write_index(index, str(tmp))
    tmp.replace(path)
    return path


def read_index(folder: Path):
    """The folder's vector index; ConfigError when the embed has not finished or the file is not an index."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise ConfigError(f"index {folder} has no {INDEX_FILE}: its embed has not finished (run the same "
                          "zir embed again to resume it)")
    try:
        index = faiss().read_index(str(path))
    except RuntimeError:
        raise ConfigError(f"index {folder}: {INDEX_FILE} is not a faiss index (delete it and rerun zir embed)") from None
    if isinstance(index, faiss().IndexHNSWFlat):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search_vectors(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (Q, k'), best first, k' = min(k, index size); an HNSW list that comes up short
    pads with id -1 (callers drop those)."""
    k = max(1, min(int(k), index.ntotal))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d), k)
    return scores, ids
