"""Image-text matching: hard-negative mining, the ITM loss on fixed inputs, re-ranking, and the objective."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import TEXT_NANO, first_batch
from zir.data import load_tokenizer, open_source
from zir.errors import ConfigError
from zir.losses.itm import (
    hardest_negatives, itm_loss, reranked_ranks, same_tokens, sampled_negatives,
)
from zir.model import build_model
from zir.recipes import TOKENIZERS_DIR


def test_hard_negative_mining_picks_the_most_similar_non_matching_pair():
    sim = torch.tensor([[0.9, 0.8, 0.1],
                        [0.7, 0.95, 0.2],
                        [0.3, 0.6, 0.99]])
    hard_text, hard_image = hardest_negatives(sim)
    assert hard_text.tolist() == [1, 0, 1]   # image i's most similar caption other than its own
    assert hard_image.tolist() == [1, 0, 1]  # caption j's most similar image other than its own


def test_mining_skips_captions_identical_to_the_positive():
    sim = torch.tensor([[0.9, 0.8, 0.1],
                        [0.7, 0.95, 0.2],
                        [0.3, 0.6, 0.99]])
    ids = torch.tensor([[5, 6, 0], [5, 6, 0], [7, 8, 9]])  # captions 0 and 1 are the same text
    same = same_tokens(ids)
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    hard_text, hard_image = hardest_negatives(sim, same)
    assert hard_text.tolist() == [2, 2, 1]   # images 0 and 1 never get the other's (identical) caption
    assert hard_image.tolist() == [2, 2, 1]
    everything_same = torch.ones(3, 3, dtype=torch.bool)  # nothing left to choose: fall back to any other item
    assert hardest_negatives(sim, everything_same)[0].tolist() == [1, 0, 1]


def test_sampled_negatives_follow_the_softmax_of_the_similarities():
    sim = torch.tensor([[1.0, 0.5, 0.0, 0.0],
                        [0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sampled_negatives(sim, scale=2.0, generator=gen)[0] for _ in range(4000)])
    share = torch.bincount(draws[:, 0], minlength=4).float() / 4000
    expected = torch.tensor([0.0, math.exp(1.0), 1.0, 1.0]) / (math.exp(1.0) + 2)  # softmax(2 x sim) without itself
    assert share.tolist() == pytest.approx(expected.tolist(), abs=0.03)
    blocked = torch.zeros(4, 4, dtype=torch.bool)
    blocked[0, 1] = blocked[1, 0] = True
    text, image = sampled_negatives(sim, blocked, scale=50.0, generator=gen)
    assert text[0] != 1 and image[1] != 0 and text[0] != 0


def test_itm_loss_on_fixed_inputs():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])  # one pair, two non-pairs
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert itm_loss(logits, 1).item() == pytest.approx(expected, rel=1e-6)


def test_rerank_orders_only_the_top_k_by_score():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    itm = torch.tensor([0.0, 5.0, 1.0, 9.0, 9.0])
    score = lambda q, cands: itm[cands]  # noqa: E731
    at = lambda i: torch.arange(5).view(1, -1) == i  # noqa: E731  the correct candidate is number i
    assert reranked_ranks(sim, 3, score, at(2)).tolist() == [2]  # candidates 0-2 reordered by ITM: 1, 2, 0
    assert reranked_ranks(sim, 3, score, at(0)).tolist() == [3]
    assert reranked_ranks(sim, 3, score, at(3)).tolist() == [4]  # outside the top 3: ITM's 9 does not lift it


def test_reranked_ranks_count_ties_against_the_correct_candidate():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    correct = torch.tensor([[False, False, True, False, False]])
    itm = torch.tensor([0.0, 5.0, 5.0, 9.0, 9.0])  # candidate 1 ties the correct one: it counts as above it
    assert reranked_ranks(sim, 3, lambda q, cands: itm[cands], correct).tolist() == [2]
    itm[1] = 4.0
    assert reranked_ranks(sim, 3, lambda q, cands: itm[cands], correct).tolist() == [1]
    far = torch.tensor([[False, False, False, False, True]])  # not in the top 3: its rank by similarity stays
    assert reranked_ranks(sim, 3, lambda q, cands: itm[cands], far).tolist() == [5]


def test_itm_objective_trains_beside_clip():
    torch.manual_seed(0)
    tokenizer = load_tokenizer(TOKENIZERS_DIR / "shapes.json")
    model = build_model({"towers": {"image": {"model": "vit_nano_patch4_32"}, "text": TEXT_NANO},
                         "objectives": {"clip": {}, "itm": {"contrastive_weight": 0, "fusion_depth": 1,
                                                            "fusion_heads": 2}}})
    batch = first_batch(model, open_source("shapes", split="train", n=16), tokenizer=tokenizer)
    opt = torch.optim.AdamW(model.param_groups(0.0, base_lr=3e-3))
    losses = []
    for _ in range(12):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(math.isfinite(v) for v in losses) and min(losses[-3:]) < losses[0]
    itm = model.objectives["itm"]
    tokens = torch.randn(3, 65, 64), torch.randn(3, 5, 64)
    assert itm.match_scores(*tokens).shape == (3,)


def test_fusion_ignores_text_padding():
    torch.manual_seed(0)
    model = build_model({"towers": {"image": {"model": "vit_nano_patch4_32"}, "text": TEXT_NANO},
                         "objectives": {"itm": {"fusion_depth": 2, "fusion_heads": 2}}})
    itm = model.objectives["itm"].eval()
    image, text = torch.randn(2, 65, 64), torch.randn(2, 5, 64)
    ids = torch.tensor([[3, 4, 5, 0], [3, 4, 0, 0]])  # pad id 0: the second caption is one token shorter
    noisy = text.clone()
    noisy[0, 4], noisy[1, 3:] = 100.0, -100.0  # what the padding positions hold must not matter
    with torch.no_grad():
        assert torch.allclose(itm.match_scores(image, text, ids), itm.match_scores(image, noisy, ids), atol=1e-5)
        assert not torch.allclose(itm.match_scores(image, text), itm.match_scores(image, noisy), atol=1e-3)


def test_itm_negatives_must_be_named():
    with pytest.raises(ConfigError, match="itm negatives='random': expected one of sampled, hardest"):
        build_model({"towers": {"image": {"model": "vit_nano_patch4_32"}, "text": TEXT_NANO},
                     "objectives": {"itm": {"negatives": "random"}}})
    with pytest.raises(ConfigError, match="itm negative_temperature=0: expected a number > 0"):
        build_model({"towers": {"image": {"model": "vit_nano_patch4_32"}, "text": TEXT_NANO},
                     "objectives": {"itm": {"negative_temperature": 0}}})
