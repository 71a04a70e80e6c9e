"""Image-text matching: hard-negative mining, the ITM loss on fixed inputs, re-ranking, and the objective."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import TEXT_NANO, first_batch
from zir.data import load_tokenizer, open_source
from zir.losses.itm import hardest_negatives, itm_loss, ranks_from_order, rerank
from zir.model import build_model
from zir.recipes import TOKENIZERS_DIR


def test_hard_negative_mining_picks_the_most_similar_non_matching_pair():
    sim = torch.tensor([[0.9, 0.8, 0.1],
                        [0.7, 0.95, 0.2],
                        [0.3, 0.6, 0.99]])
    hard_text, hard_image = hardest_negatives(sim)
    assert hard_text.tolist() == [1, 0, 1]   # image i's most similar caption other than its own
    assert hard_image.tolist() == [1, 0, 1]  # caption j's most similar image other than its own


def test_itm_loss_on_fixed_inputs():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])  # one pair, two non-pairs
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert itm_loss(logits, 1).item() == pytest.approx(expected, rel=1e-6)


def test_rerank_keeps_the_top_k_set_and_orders_it_by_score():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    itm = torch.tensor([0.0, 5.0, 1.0, 9.0, 9.0])
    order = rerank(sim, 3, lambda q, cands: itm[cands])
    assert order.tolist() == [[1, 2, 0, 3, 4]]  # candidates 0-2 reordered by ITM; 3 and 4 stay outside
    correct = torch.tensor([[False, False, True, False, False]])
    assert ranks_from_order(sim.argsort(dim=1, descending=True), correct).tolist() == [3]
    assert ranks_from_order(order, correct).tolist() == [2]


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
