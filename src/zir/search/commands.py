"""The `zir embed`, `zir search`, `zir dedup` and `zir serve` sub-commands: parsing and printing only."""

from __future__ import annotations

import argparse


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed a source with a run into an index folder (resuming one that was interrupted)."""
    from zir.search.embed import embed_source

    info = embed_source(args.run, args.source, args.out, batch_size=args.batch_size, data_root=args.data_root,
                        progress=False if args.no_progress else None)
    if info["kind"] == "none":  # a torchrun rank other than 0: its share is stored, rank 0 reports the merge
        return 0
    resumed = f", resumed at item {info['resumed_at']}" if info["resumed_at"] else ""
    print(f"wrote {info['index']}: {info['items']} items ({info['skipped']} skipped{resumed}), {info['space']} "
          f"space, {info['kind']} index; search it with zir search {info['index']} \"some words\"")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Print the k items nearest a text or image query, best first, one per line."""
    from zir.errors import ConfigError
    from zir.search.query import Searcher, hit_lines

    if (args.query is None) == (args.image is None):
        raise ConfigError("zir search needs a text query or --image FILE (one of them)")
    if args.k < 1:
        raise ConfigError(f"--k {args.k}: expected at least 1")
    searcher = Searcher(args.index)
    try:
        hits = searcher.text(args.query, args.k) if args.image is None else searcher.image_file(args.image, args.k)
    finally:
        searcher.close()
    print("\n".join(hit_lines(hits)))
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    """Write DIR/duplicates.csv and DIR/report.html of an index's duplicates; deletes nothing."""
    from zir.search.dedup import dedup_index

    info = dedup_index(args.index, args.out, threshold=args.threshold, caption_z=args.caption_z)
    g = info["groups"]
    print(f"{info['items']} items: {g['exact']} exact and {g['near']} near-duplicate groups ({info['drop']} items "
          f"to drop), {g['caption']} captions to check; nothing deleted")
    print(f"wrote {info['csv']}\nwrote {info['html']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the search page until interrupted."""
    from zir.search.server import make_server

    server = make_server(args.index, args.port, args.host)
    host, port = server.server_address[:2]
    print(f"serving {args.index} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_parsers(sub) -> None:
    """Add the search sub-commands to the `zir` parser."""
    em = sub.add_parser("embed", help="embed a source's images (and captions) with a run into a searchable index",
                        description="Embed every image of SOURCE with RUN into the index folder OUT; "
                                    "run it again to resume an interrupted embed.")
    em.add_argument("run", help="run folder (from zir train)")
    em.add_argument("source", help="a built-in name (shapes:test, cifar10:test), image folder, caption table or shards")
    em.add_argument("--out", required=True, help="index folder to write (resumed when it holds this embed)")
    em.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    em.add_argument("--data-root", default=None, help="folder holding cifar10/, flickr8k/ and fsdd/ (default $ZIR_DATA)")
    em.add_argument("--no-progress", action="store_true", help="no progress bar")
    em.set_defaults(func=cmd_embed)

    se = sub.add_parser("search", help="the items of an index nearest a text or an image, best first",
                        description="Print the K items of INDEX nearest QUERY (or --image FILE), best first.")
    se.add_argument("index", help="index folder (from zir embed)")
    se.add_argument("query", nargs="?", default=None, help="words to search for, e.g. \"a red circle\"")
    se.add_argument("--image", default=None, metavar="FILE", help="search by this image instead of text")
    se.add_argument("--k", type=int, default=10, help="results to print (default 10)")
    se.set_defaults(func=cmd_search)

    from zir.search.dedup import CAPTION_Z, NEAR_THRESHOLD

    de = sub.add_parser("dedup", help="exact and near-duplicate groups and mismatched captions of an index (CSV + HTML)",
                        description="Find INDEX's exact duplicates, SemDeDup near-duplicates and captions that do not "
                                    "fit their image; write OUT/duplicates.csv and OUT/report.html. Deletes nothing.")
    de.add_argument("index", help="index folder (from zir embed)")
    de.add_argument("--out", required=True, help="folder for duplicates.csv and report.html")
    de.add_argument("--threshold", type=float, default=NEAR_THRESHOLD,
                    help=f"cosine similarity that makes two images near-duplicates (default {NEAR_THRESHOLD})")
    de.add_argument("--caption-z", type=float, default=CAPTION_Z,
                    help=f"robust deviations below the median image-caption similarity that flag a caption "
                         f"(default {CAPTION_Z})")
    de.set_defaults(func=cmd_dedup)

    sv = sub.add_parser("serve", help="a local web page to search an index by text or image",
                        description="Serve a search page for INDEX on http://HOST:PORT/ (127.0.0.1 by default).")
    sv.add_argument("index", help="index folder (from zir embed)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.set_defaults(func=cmd_serve)
