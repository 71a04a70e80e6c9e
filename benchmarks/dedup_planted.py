"""Precision and recall of `zir dedup` on a collection with planted duplicates.

Writes ORIGINALS images of a source into a folder, plants COPIES altered copies of some of them (resized to
75%, re-encoded as JPEG at quality 60, or centre-cropped to 85%, in turn) plus EXACT byte-different but
pixel-identical copies (PNG saved again as BMP), embeds the folder with RUN and scores the near-duplicate
groups at several thresholds in both spaces (the pooled features and the search space):
precision = dropped items that are a planted copy grouped with its original / all dropped items,
recall = planted copies grouped with their original / all planted copies.

    python benchmarks/dedup_planted.py RUN --data flickr8k:test --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zir.data import open_source
from zir.search.dedup import exact_groups, near_groups
from zir.search.embed import embed_source
from zir.search.store import ItemStore

ALTERATIONS = ("resize", "jpeg", "crop")


def altered(img: Image.Image, how: str) -> Image.Image:
    """A planted near-duplicate of `img`."""
    if how == "resize":
        return img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)), Image.BILINEAR)
    if how == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    w, h = img.size
    cw, ch = round(w * 0.85), round(h * 0.85)
    return img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def plant(source, folder: Path, originals: int, copies: int, exact: int, seed: int = 0) -> dict[str, str]:
    """Write the collection; returns {copy file name: its original's file name}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, sample in enumerate(source):
        if i == originals:
            break
        name = f"img{i:05d}.png"
        Image.fromarray(sample.image).save(folder / name)
        names.append(name)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(names), size=copies + exact, replace=False)
    truth = {}
    for j, i in enumerate(chosen):
        img = Image.open(folder / names[i]).convert("RGB")
        if j < copies:
            how = ALTERATIONS[j % len(ALTERATIONS)]
            name = f"zcopy{j:04d}-{how}.png"
            altered(img, how).save(folder / name)
        else:
            name = f"zexact{j:04d}.bmp"
            img.save(folder / name)
        truth[name] = names[i]
    return truth


def score(groups, names: list[str], truth: dict[str, str]) -> dict:
    """Precision and recall of the dropped items against the planted copies (and per alteration)."""
    dropped, found = 0, {how: 0 for how in (*ALTERATIONS, "exact")}
    hits = 0
    for group in groups:
        members = {names[i] for i in group.ids}
        for i in group.ids[1:]:
            dropped += 1
            name = names[i]
            if truth.get(name) in members:
                hits += 1
        for name in members:
            if name in truth and truth[name] in members:
                found["exact" if name.startswith("zexact") else name.split("-")[1][:-4]] += 1
    planted = {how: sum(1 for n in truth if (("exact" if n.startswith("zexact") else n.split("-")[1][:-4]) == how))
               for how in found}
    return {"precision": hits / dropped if dropped else 1.0, "recall": sum(found.values()) / len(truth),
            "dropped": dropped, "recall_by_kind": {h: found[h] / planted[h] for h in found if planted[h]}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", default="flickr8k:test")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--originals", type=int, default=600)
    parser.add_argument("--copies", type=int, default=150)
    parser.add_argument("--exact", type=int, default=30)
    parser.add_argument("--out", default="/tmp/zir-dedup-planted")
    parser.add_argument("--thresholds", default="0.95,0.98,0.99,0.995,0.998")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    folder = out / "collection"
    truth = plant(open_source(args.data, data_root=args.data_root), folder, args.originals, args.copies, args.exact)
    started = time.perf_counter()
    embed_source(args.run, str(folder), out / "index", progress=False)
    embed_s = time.perf_counter() - started
    store = ItemStore(out / "index")
    names = [Path(it.path).name for it in store.items()]
    exact = exact_groups([it.sha1 for it in store.items()])
    results = {"items": len(names), "embed_s": round(embed_s, 1), "exact": score(exact, names, truth), "near": {}}
    for space, column in (("features", "feature_vec"), ("search", "image_vec")):
        vectors = store.vectors(column)
        for t in map(float, args.thresholds.split(",")):
            started = time.perf_counter()
            groups = near_groups(vectors, t)
            results["near"][f"{space}@{t}"] = {**score(groups, names, truth),
                                                "seconds": round(time.perf_counter() - started, 2)}
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
