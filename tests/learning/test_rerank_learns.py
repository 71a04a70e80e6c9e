"""The shipped `itm_rerank` recipe, trained on the towers of a shipped `clip` run, raises retrieval's R@1 when
it re-ranks each query's top 16 (issue #21's criterion), on 500 shapes test images and their 2,500 captions.

Both stages run as shipped except for what makes a run reproducible (one thread, fp32, a fixed seed): `clip`
for 600 steps (where its towers encode shape), then `itm_rerank` for its 3000 steps from that run (the fusion,
fresh projections and each tower's last block train). The gain is paired: re-ranked against plain R@1 of the
same run, so the spread of R@1 between seeds (which is larger than the gain) does not enter it. Measured with
`python tests/learning/test_rerank_learns.py 0,1,2` (about 7.5 CPU-minutes a seed), recorded at the test with the
processor; `slow` tier (`make test-slow`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from zir.eval.run_eval import evaluate_run
from test_shapes_zero_shot import trained

CLIP_STEPS = 600
RERANK_STEPS = 3000
# Points of R@1, averaged over both directions. Seeds 0-4, Intel Xeon (AMX), fp32, 1 thread (plain -> re-ranked,
# i2t; t2i): 17.6 -> 19.4, 14.64 -> 15.08 / 20.4 -> 23.0, 14.12 -> 14.76 / 15.4 -> 17.2, 14.68 -> 15.24 /
# 17.4 -> 22.6, 15.2 -> 15.68 / 17.2 -> 19.4, 14.12 -> 14.8; mean gains 1.12, 1.62, 1.18, 2.84, 1.44 (mean 1.64,
# sd 0.70), and each direction gained in every seed (i2t +1.8 to +5.2, t2i +0.44 to +0.68). The threshold is the
# criterion itself, re-ranking raises R@1: the lowest seed is 1.1 above it (1.6 sd). With the towers frozen
# (last_blocks: 0, the recipe before) the same seeds gained 3.1, 2.6, 0.7, 0.4, 2.2: as much on average but the
# lowest only 0.4 above (docs/adapt.md). Each direction alone is too small for a threshold of its own (t2i's
# gains are 11-17 of 2,500 queries).
THRESHOLD_MEAN_GAIN = 0.0


def reranked(seed: int, folder: Path) -> dict:
    """Plain and re-ranked R@1 both ways for one seed of the two-stage run."""
    clip = trained("clip", CLIP_STEPS, folder / "clip", seed)
    run = trained("itm_rerank", RERANK_STEPS, folder / "rerank", seed, (f"model.init={clip}",))
    res = evaluate_run(run, tasks="retrieval", limit=500, write=False, rerank=16)["retrieval"]
    assert res["rerank_k"] == 16 and res["n_images"] == 500
    return {key: res[key] for key in ("i2t_R@1", "reranked_i2t_R@1", "reranked_itm_only_i2t_R@1",
                                      "t2i_R@1", "reranked_t2i_R@1", "reranked_itm_only_t2i_R@1")}


@pytest.mark.slow
def test_the_rerankers_fusion_raises_r1_over_the_similarity_it_reorders(tmp_path):
    r = reranked(0, tmp_path)
    gains = [r[f"reranked_{d}_R@1"] - r[f"{d}_R@1"] for d in ("i2t", "t2i")]
    assert sum(gains) / 2 > THRESHOLD_MEAN_GAIN, r


if __name__ == "__main__":  # the seed spread behind the threshold: python tests/learning/test_rerank_learns.py 0,1,2
    import tempfile

    torch.set_num_threads(1)
    for seed in (int(s) for s in sys.argv[1].split(",")):
        with tempfile.TemporaryDirectory() as folder:
            started = time.process_time()
            row = {"seed": seed, **reranked(seed, Path(folder)), "cpu_s": round(time.process_time() - started)}
            print(json.dumps(row), flush=True)
