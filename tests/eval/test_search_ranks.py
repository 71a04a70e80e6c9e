"""torchrun -m zir embed: two ranks each embed half of the source and rank 0 merges one index, equal to a
single-process embed (same items in the same order, same vectors)."""

from __future__ import annotations

from zir.config import load_config
from zir.data import ShapesSource
from zir.search.embed import embed_source
from zir.train import train

WORKER = """
import os
import numpy as np
import torch
torch.set_num_threads(1)
from zir.data import ShapesSource
from zir.search.embed import embed_source
from zir.search.store import ItemStore

rank = int(os.environ["RANK"])
source = ShapesSource("test", n=30, size=16, objects=(1, 1), object_scale=2.5)
info = embed_source("run", source, "idx", batch_size=4, progress=False)
verdict = "OK"
if rank == 0:
    merged, single = ItemStore("idx"), ItemStore("single")
    if [i.key for i in merged.items()] != [i.key for i in single.items()] or merged.positions() != list(range(30)):
        verdict = "FAIL items differ: " + str(merged.positions())
    elif not np.allclose(merged.vectors(), single.vectors(), atol=1e-5):
        verdict = "FAIL vectors differ"
    elif info["items"] != 30 or info["kind"] != "exact" or not os.path.isfile("idx/images.faiss"):
        verdict = "FAIL " + str(info)
elif info["items"] != 15:
    verdict = "FAIL rank 1 embedded " + str(info["items"])
open(f"rank{rank}.result", "w").write(verdict)
"""


def test_two_ranks_embed_one_index_equal_to_one_process(run_two_ranks, tmp_path):
    train(load_config("clip", ["train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32",
                               "data.batch_size=32", "data.options.n=64"]), tmp_path / "run", progress=False)
    embed_source(tmp_path / "run", ShapesSource("test", n=30, size=16, objects=(1, 1), object_scale=2.5),
                 tmp_path / "single", progress=False)
    assert run_two_ranks(WORKER, timeout=240) == ["OK", "OK"]
