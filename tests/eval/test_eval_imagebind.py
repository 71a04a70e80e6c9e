"""`zir eval` on an ImageBind run: audio zero-shot through the text tower on fsdd (the audio tower scored on data
without images), image zero-shot and audio<->image retrieval (`av_retrieval`) on av_digits."""

from __future__ import annotations

import pytest
import torch

from helpers import SHARED
from zir.config import load_config
from zir.eval.av_retrieval import class_recall
from zir.eval.run_eval import evaluate_run
from zir.recipes import RECIPES_DIR
from zir.train import train


def test_class_recall_counts_a_hit_when_an_item_of_the_query_class_is_among_the_k_nearest():
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    item_labels = torch.tensor([0, 1, 2, 3])
    queries = torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.1, 1.0]])
    # nearest: items 0, 0, 1; second nearest: 1, 1, 0
    got = class_recall(queries, items, torch.tensor([0, 1, 2]), item_labels, ks=(1, 2))
    assert got[1] == pytest.approx(100 / 3) and got[2] == pytest.approx(200 / 3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagebind") / "run"
    cfg = load_config(RECIPES_DIR / "imagebind.yaml", [
        "train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32", f"data.data_root={SHARED}",
        "data.batch_size=16", "model.towers.audio.model=ast_nano"])
    torch.manual_seed(0)
    train(cfg, out, progress=False)
    return out


@pytest.mark.long(seconds=12)
@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_an_imagebind_run_is_scored_on_audio_and_on_images_and_audio(run):
    audio = evaluate_run(run, tasks="zeroshot,linear,av_retrieval", data="fsdd", data_root=SHARED, limit=30,
                         write=False)
    assert audio["zeroshot"]["tower"] == "audio" and audio["zeroshot"]["n_test"] == 30 and 0 <= audio["zeroshot"]["top1"] <= 100
    assert audio["linear"]["tower"] == "audio"
    assert audio["av_retrieval"]["skipped"] == "fsdd samples do not carry both an image and a recording"
    both = evaluate_run(run, tasks="zeroshot,av_retrieval", data="av_digits", data_root=SHARED, limit=30,
                        baseline=True)
    assert both["zeroshot"]["tower"] == "image" and both["zeroshot"]["dataset"] == "av_digits"
    ret = both["av_retrieval"]
    assert set(ret) >= {"a2i_R@1", "a2i_R@5", "i2a_R@1", "i2a_R@5", "random_init"} and ret["n_test"] == 30
    assert ret["audio_tower"] == "audio" and all(0 <= ret[k] <= 100 for k in ("a2i_R@1", "i2a_R@5"))
    assert (run / "results.json").is_file()
