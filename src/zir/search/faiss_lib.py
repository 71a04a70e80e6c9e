"""The one import of faiss (the optional `search` extra), so a missing install is one clear line."""

from __future__ import annotations

from zir.errors import ConfigError


def faiss():
    """The faiss module, single-threaded unless the caller asks otherwise; ConfigError when not installed."""
    try:
        import faiss as lib
    except ImportError:
        raise ConfigError("zir embed/search/dedup need the vector index library faiss-cpu: "
                          "pip install 'zir[search]' (or pip install faiss-cpu)") from None
    return lib
