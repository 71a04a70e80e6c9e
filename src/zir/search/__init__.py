"""Put a trained run to work on a collection: embed it (`embed.py`), search it by text or image (`query.py`,
`server.py`), and find its duplicates and mismatched captions (`dedup.py`).

An index is a folder: `items.sqlite` (every item's key, path, caption, content hash, thumbnail and
embeddings, written batch by batch so an interrupted embed resumes) and `images.faiss` (the vector index
built from it when the embed completes: exact below `EXACT_MAX` vectors, HNSW above).
"""
