"""`zir eval RUN --tasks retrieval --rerank K`: re-ranked recall from a run's itm objective, beside the plain one."""

from __future__ import annotations

import json

import torch

from helpers import one_line_error
from zir.cli import main
from zir.eval.rerank import once_per_query

TINY = ["train.steps=2", "data.batch_size=8", "data.options.n=16", "train.threads=1",
        "model.objectives.itm={contrastive_weight: 0, fusion_depth: 1, fusion_heads: 2}"]


def test_rerank_reorders_only_the_top_k(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "clip", *TINY, "--out", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--tasks", "retrieval", "--rerank", "4", "--limit", "8", "--no-report"]) == 0
    res = json.loads((run / "results.json").read_text())["retrieval"]
    assert res["rerank_k"] == 4
    for direction in ("i2t", "t2i"):  # the top-4 set is unchanged, so recall at 5 and 10 cannot move
        for k in (5, 10):
            assert res[f"reranked_{direction}_R@{k}"] == res[f"{direction}_R@{k}"]
        assert 0 <= res[f"reranked_{direction}_R@1"] <= 100
        assert 0 <= res[f"reranked_itm_only_{direction}_R@1"] <= 100  # the fusion's logit alone, ALBEF's ranking
    assert res["rerank_score"] == "itm logit + contrastive logit"
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", "retrieval", "--rerank", "-1", "--no-report"]) != 0
    assert "--rerank -1: expected the number of top candidates" in one_line_error(capsys)


def test_each_querys_fusion_scores_are_computed_once_for_both_rankings():
    calls = []

    def score(q, cands):
        calls.append(q)
        return torch.arange(len(cands), dtype=torch.float)

    cached = once_per_query(score)
    cands = torch.tensor([3, 1, 2])
    assert cached(0, cands).tolist() == cached(0, cands).tolist() == [0.0, 1.0, 2.0]
    cached(1, cands)
    assert calls == [0, 1]
