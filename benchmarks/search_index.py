"""Query latency and recall@10 of zir's vector index (faiss exact and HNSW) on synthetic unit vectors.

The vectors are a mixture of Gaussian clusters (embeddings of real collections cluster; uniform random
vectors in high dimension are an unrealistically hard case for any approximate index), L2-normalised. Each
query is one vector searched alone (as `zir search` and the page do), one thread. Recall@10 of HNSW is the
fraction of the exact top 10 it returns. `--compare` also times usearch and hnswlib (when installed) with the
same graph settings: the measurement that chose faiss (docs/search.md).

    python benchmarks/search_index.py --n 100000 --dim 256
    python benchmarks/search_index.py --n 1000000 --dim 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from zir.search.faiss_lib import faiss
from zir.search.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, build_index


def vectors(n: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """(n, dim) unit vectors around the centres (rows of `centres`), built in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    clusters, dim = centres.shape
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def one_at_a_time(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """(ids (Q, k), median milliseconds per query) searching each query alone."""
    ids, times = [], []
    for q in queries:
        started = time.perf_counter()
        ids.append(search(q[None, :], k))
        times.append(time.perf_counter() - started)
    return np.vstack(ids), float(np.median(times) * 1e3)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="noise per coordinate around each centre (whose coordinates are standard normal)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also time usearch and hnswlib when installed")
    parser.add_argument("--skip-hnsw", action="store_true", help="time the exact index only (no graph to build)")
    args = parser.parse_args(argv)
    lib = faiss()
    lib.omp_set_num_threads(args.threads)
    spread = args.spread  # noise per coordinate; the centres' coordinates are standard normal
    centres = np.random.default_rng(0).standard_normal((args.clusters, args.dim)).astype(np.float32)
    data = vectors(args.n, centres, spread, seed=1)
    queries = vectors(args.queries, centres, spread, seed=2)  # new points of the same collection's clusters
    result = {"n": args.n, "dim": args.dim, "threads": args.threads, "cpu": _cpu(), "faiss": lib.__version__,
              "load_average": round(os.getloadavg()[0], 1), "cores": os.cpu_count()}

    exact = lib.IndexFlatIP(args.dim)
    exact.add(data)
    truth, result["exact_ms"] = one_at_a_time(lambda q, k: exact.search(q, k)[1][0], queries, args.k)

    if args.skip_hnsw:
        print(json.dumps(result, indent=1))
        return
    started = time.perf_counter()
    hnsw = build_index(data, exact_max=0)
    result["hnsw_build_s"] = round(time.perf_counter() - started, 1)
    found, result["hnsw_ms"] = one_at_a_time(lambda q, k: hnsw.search(q, k)[1][0], queries, args.k)
    result["hnsw_recall@10"] = round(recall(found, truth), 4)
    result["hnsw"] = {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    for ef in (128, 256):  # what a larger search list buys on the same graph
        hnsw.hnsw.efSearch = ef
        found, ms = one_at_a_time(lambda q, k: hnsw.search(q, k)[1][0], queries, args.k)
        result[f"hnsw_ef{ef}"] = {"ms": ms, "recall@10": round(recall(found, truth), 4)}
    if args.compare:
        result.update(_others(data, queries, truth, args.k, args.threads))
    print(json.dumps(result, indent=1))


def _others(data, queries, truth, k, threads) -> dict:
    out = {}
    try:
        from usearch.index import Index

        index = Index(ndim=data.shape[1], metric="ip", connectivity=HNSW_M, expansion_add=HNSW_EF_CONSTRUCTION,
                      expansion_search=HNSW_EF_SEARCH)
        started = time.perf_counter()
        index.add(np.arange(len(data)), data, threads=threads)
        build = time.perf_counter() - started
        found, ms = one_at_a_time(lambda q, kk: index.search(q, kk, threads=1).keys.reshape(-1), queries, k)
        out["usearch"] = {"build_s": round(build, 1), "ms": ms, "recall@10": round(recall(found, truth), 4)}
    except ImportError:
        out["usearch"] = "not installed"
    try:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=data.shape[1])
        index.init_index(len(data), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        index.set_num_threads(threads)
        started = time.perf_counter()
        index.add_items(data, np.arange(len(data)))
        build = time.perf_counter() - started
        index.set_ef(HNSW_EF_SEARCH)
        found, ms = one_at_a_time(lambda q, kk: index.knn_query(q, kk)[0][0], queries, k)
        out["hnswlib"] = {"build_s": round(build, 1), "ms": ms, "recall@10": round(recall(found, truth), 4)}
    except ImportError:
        out["hnswlib"] = "not installed"
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or os.uname().machine


if __name__ == "__main__":
    main()
