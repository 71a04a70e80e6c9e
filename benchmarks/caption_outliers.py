"""Precision and recall of `zir dedup`'s mismatched-caption rule on a caption table with planted swaps.

Writes N single-object shapes test images and a captions.csv where SWAPS of them carry the caption of
another image of a different shape and colour, embeds the table with RUN (an image-text run trained on
shapes, e.g. tests/fixtures/search_clip) and scores the items flagged `caption` at several --caption-z:
precision = flagged items whose caption was swapped / flagged, recall = swapped items flagged / swapped.

    python benchmarks/caption_outliers.py tests/fixtures/search_clip
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zir.data import ShapesSource
from zir.search.dedup import caption_outliers
from zir.search.embed import embed_source
from zir.search.store import ItemStore


def plant(folder: Path, n: int, swaps: int, seed: int = 0) -> set[str]:
    """Write the images and captions.csv; returns the file names whose caption was swapped."""
    folder.mkdir(parents=True, exist_ok=True)
    source = ShapesSource("test", n=n, size=16, objects=(1, 1), object_scale=2.5, label="shape")
    colours = ShapesSource("test", n=n, size=16, objects=(1, 1), object_scale=2.5, label="colour").labels()
    shapes = source.labels()
    captions = [source.get(i).captions[0] for i in range(n)]
    rng = np.random.default_rng(seed)
    swapped: set[str] = set()
    order = rng.permutation(n)
    for i in order:
        if len(swapped) >= swaps:
            break
        others = [j for j in range(n) if shapes[j] != shapes[i] and colours[j] != colours[i]]
        captions[i] = captions[int(rng.choice(others))]
        swapped.add(f"img{i:04d}.png")
    with open(folder / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        for i in range(n):
            Image.fromarray(source.get(i).image).save(folder / f"img{i:04d}.png")
            writer.writerow([f"img{i:04d}.png", captions[i]])
    return swapped


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--swaps", type=int, default=25)
    parser.add_argument("--out", default="/tmp/zir-caption-outliers")
    parser.add_argument("--z", default="2,3,4")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    swapped = plant(out / "table", args.n, args.swaps)
    embed_source(args.run, str(out / "table" / "captions.csv"), out / "index", progress=False)
    store = ItemStore(out / "index")
    keys = [it.key for it in store.items()]
    images, captions = store.vectors(), store.vectors("caption_vec")
    results = {"items": len(keys), "swapped": len(swapped)}
    for z in map(float, args.z.split(",")):
        flagged = {keys[g.ids[0]] for g in caption_outliers(images, captions, z)}
        hits = len(flagged & swapped)
        results[f"z={z}"] = {"flagged": len(flagged), "precision": round(hits / len(flagged), 3) if flagged else 1.0,
                             "recall": round(hits / len(swapped), 3)}
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
