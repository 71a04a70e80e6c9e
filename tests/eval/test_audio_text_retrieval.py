"""Audio<->text retrieval: `zir eval --tasks retrieval` on a run whose scored tower is audio ranks captions by
recording and recordings by caption, counting same-class hits (a2t_R@K, t2a_R@K)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from helpers import tone_folder
from zir.config import load_config
from zir.eval.audio_text_retrieval import audio_text_retrieval
from zir.eval.run_eval import evaluate_run
from zir.recipes import RECIPES_DIR
from zir.train import train


class _Context(SimpleNamespace):
    """The parts of an EvalContext that the task reads, over fixed embeddings."""

    def text_reason(self):
        return None

    def pooled(self, split, source):
        return self.audio, self.labels

    def where(self):
        return {"dataset": "toy", "split": "test"}

    def skipped(self, reason):
        return {"test": {"skipped": reason}}


def test_same_class_hits_are_counted_both_ways():
    e = torch.eye(3)
    labels = torch.tensor([0, 0, 1, 2])
    # recording 1 (class 0) leans towards class 1's axis, recording 2 (class 1) partly towards class 2's; no ties
    audio = torch.stack([e[0], e[1] + 0.3 * e[0], e[1] + 0.5 * e[2], e[2]])
    captions = e[[0, 0, 0, 0, 1, 1, 2, 2]]  # two captions per recording, each on its class's axis
    data = SimpleNamespace(name="toy", test_split="test", test=SimpleNamespace(has_captions=True, classes=("a", "b", "c")))
    ctx = _Context(data=data, audio=audio, labels=labels, image_text=SimpleNamespace(project_image=lambda x: x, encode_text=None),
                   features=SimpleNamespace(captions=lambda split, source, encode: captions))
    got = audio_text_retrieval(ctx)["test"]
    # the captions are ranked once per distinct embedding: one for each class here
    # audio->text: recording 1 finds class 1's caption first, class 0's second; the others hit first
    assert got["a2t_R@1"] == pytest.approx(75.0) and got["a2t_R@5"] == pytest.approx(100.0)
    # text->audio: class 1's caption finds recording 1 (class 0, cosine 0.96) before recording 2 (0.89)
    assert got["t2a_R@1"] == pytest.approx(200 / 3) and got["t2a_R@5"] == pytest.approx(100.0)
    assert got["hits"] == "same class" and got["n_recordings"] == 4 and got["n_captions"] == 3

@pytest.mark.long(seconds=8)
def test_retrieval_on_an_audio_clip_run_is_audio_text(tmp_path):
    folder = tone_folder(tmp_path / "wavs", {"low": 300.0, "mid": 900.0, "high": 1800.0}, per_class=6)
    torch.manual_seed(0)
    train(load_config(RECIPES_DIR / "audio_clip.yaml", [
        "train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=2", "train.precision=fp32",
        "model.towers.audio.model=ast_nano", f"data.source={folder}"]), tmp_path / "run", progress=False)
    res = evaluate_run(tmp_path / "run", tasks="retrieval", baseline=True, write=False)["retrieval"]
    assert res["tower"] == "audio" and res["hits"] == "same class"
    # 20% of 18 recordings; their class-name captions (four templates), each distinct one ranked once
    assert res["n_recordings"] == 4 and 3 <= res["n_captions"] <= 3 * 4
    for key in ("a2t_R@1", "a2t_R@5", "t2a_R@1", "t2a_R@5"):
        assert 0 <= res[key] <= 100 and 0 <= res["random_init"][key] <= 100
    assert res["a2t_R@5"] == 100.0 or res["a2t_R@1"] <= res["a2t_R@5"]
