"""The HTML report of `zir dedup`: each group's thumbnails (embedded, so the file stands alone) with keys."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from zir.search.store import ItemStore

_STYLE = """body{font-family:sans-serif;margin:1.5em}h2{margin-top:1.5em}.group{border:1px solid #ccc;margin:.6em 0;
padding:.4em}.group p{margin:.2em 0;font-size:90%}figure{display:inline-block;margin:.3em;text-align:center;
font-size:75%;max-width:130px;word-break:break-all}img{width:96px;height:96px;object-fit:contain;background:#eee}
.drop img{outline:3px solid #d33}.keep img{outline:3px solid #3a3}.check img{outline:3px solid #e90}"""

_TITLES = {"exact": "Exact duplicates (same pixels)", "near": "Near-duplicates (SemDeDup)",
           "caption": "Captions that do not fit their image (low image-caption similarity)"}


def write_html(store: ItemStore, groups: list, path: Path, threshold: float) -> Path:
    """Write the report: a section per kind, a box per group, a thumbnail per item marked keep/drop/check."""
    items = {it.id: it for it in store.items(sorted({i for g in groups for i in g.ids}))} if groups else {}
    parts = [f"<!doctype html><meta charset=utf-8><title>zir dedup: {html.escape(str(store.folder))}</title>",
             f"<style>{_STYLE}</style><h1>Duplicates in {html.escape(str(store.folder))}</h1>",
             f"<p>{store.count()} items; near-duplicate threshold cosine &ge; {threshold}. Nothing was deleted: "
             "red marks what duplicates.csv suggests dropping, green what it keeps, orange what to check.</p>"]
    for kind in ("exact", "near", "caption"):
        mine = [g for g in groups if g.kind == kind]
        parts.append(f"<h2>{_TITLES[kind]}: {len(mine)}</h2>")
        for n, group in enumerate(mine, 1):
            parts.append(f"<div class=group><p>{kind} {n}, similarity {group.score:.3f}</p>")
            for j, i in enumerate(group.ids):
                action = "check" if kind == "caption" else ("keep" if j == 0 else "drop")
                it = items[i]
                thumb = base64.b64encode(store.thumb(i) or b"").decode()
                caption = f"<br>{html.escape(it.caption)}" if kind == "caption" and it.caption else ""
                parts.append(f"<figure class={action}><img src='data:image/jpeg;base64,{thumb}' alt=''>"
                             f"<figcaption>{action}: {html.escape(it.shown)}{caption}</figcaption></figure>")
            parts.append("</div>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
