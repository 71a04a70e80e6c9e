"""Token merging (ToMe) on the ViT tower: matching, size-weighted merging, the switch, token counts."""

from __future__ import annotations

import pytest
import torch

import zir
from helpers import random_images, tiny_vit
from zir.errors import ConfigError
from zir.models.tome import merged_forward_tokens, merging_block, set_token_merging
from zir.nn.token_merging import bipartite_soft_matching, merge_schedule, merge_tokens


def test_matching_pairs_each_merged_a_token_with_its_most_similar_b_token():
    torch.manual_seed(0)
    metric = torch.randn(2, 10, 8)
    unmerged, merged, their_b = bipartite_soft_matching(metric, 3)
    assert unmerged.shape == (2, 2) and merged.shape == (2, 3) and their_b.shape == (2, 3)
    # Every A token is either kept or merged, and the kept ones are in their original order.
    assert torch.equal(torch.cat([unmerged, merged], 1).sort(1).values, torch.arange(5).expand(2, 5))
    assert torch.equal(unmerged, unmerged.sort(1).values)
    unit = metric / metric.norm(dim=-1, keepdim=True)
    sim = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)
    best, best_b = sim.max(-1)
    assert torch.equal(their_b, best_b.gather(1, merged))
    # The merged A tokens are the ones with the strongest best match.
    assert (best.gather(1, merged).amin(1) >= best.gather(1, unmerged).amax(1)).all()


def test_merging_is_a_size_weighted_mean_that_conserves_mass():
    torch.manual_seed(0)
    x, size = torch.randn(2, 9, 4), torch.randint(1, 4, (2, 9, 1)).float()
    match = bipartite_soft_matching(torch.randn(2, 9, 6), 2)
    merged, new_size = merge_tokens(x, size, *match)
    assert merged.shape == (2, 7, 4) and new_size.shape == (2, 7, 1)
    assert torch.allclose((merged * new_size).sum(1), (x * size).sum(1), atol=1e-5)
    assert torch.equal(new_size.sum(1), size.sum(1))


def test_merging_nothing_keeps_outputs_equal():
    model, x = tiny_vit(), random_images(seed=1)
    with torch.no_grad():
        plain = model.forward_tokens(x)
        assert torch.equal(set_token_merging(model, 0).forward_tokens(x), plain)
        assert torch.equal(set_token_merging(model, [0, 0])(x), model.forward_head(plain))
        # The merging forward itself, asked to merge nothing, reproduces the plain blocks.
        model.tome_r = [0, 0]
        assert torch.allclose(merged_forward_tokens(model, x), plain, atol=1e-5)


@pytest.mark.parametrize("r,expected", [(8, 65 - 16), ([4, 12], 65 - 16), (100, 1 + 64 - 32 - 16), ([0, 3], 62)])
def test_token_count_shrinks_as_asked(r, expected):
    model, x = tiny_vit(), random_images(seed=1)
    with torch.no_grad():
        tokens = set_token_merging(model, r).forward_tokens(x)
        assert tokens.shape == (2, expected, 64)
        assert model(x).shape == (2, 10)
    set_token_merging(model, 0)
    assert model.forward_tokens(x).shape == (2, 65, 64)


def test_merging_keeps_prefix_tokens_first_and_works_with_keep():
    model, x = tiny_vit(reg_tokens=2, embed_prefix=False), random_images(seed=1)
    keep = torch.stack([torch.randperm(64)[:32] for _ in range(2)])
    with torch.no_grad():
        plain = model.forward_tokens(x, keep)
        merged = set_token_merging(model, 4).forward_tokens(x, keep)
    assert merged.shape == (2, 3 + 32 - 8, 64)
    # The first block sees identical prefix inputs either way; the CLS token stays at index 0 and close.
    assert torch.allclose(model.pool(merged), model.pool(plain), atol=0.3)


def test_duplicate_tokens_merge_exactly_with_proportional_attention():
    # Patch tokens in identical pairs (2i, 2i+1): each A token matches its twin in B. Merging all pairs
    # halves the tokens, and proportional attention makes the next block see exactly what it saw before.
    model = tiny_vit()
    torch.manual_seed(3)
    half = torch.randn(1, 16, 64)
    x = torch.cat([torch.randn(1, 1, 64), half.repeat_interleave(2, dim=1)], dim=1)  # CLS + 32 patches
    first, second = model.blocks
    with torch.no_grad():
        plain = second(first(x))
        merged, size = merging_block(first, x, None, 16, num_prefix=1)
        assert merged.shape == (1, 17, 64) and torch.equal(size[0, 1:, 0], torch.full((16,), 2.0))
        out, _ = merging_block(second, merged, size, 0, num_prefix=1)
    assert torch.allclose(out, plain[:, [0, *range(2, 33, 2)]], atol=1e-5)


def test_bad_schedules_and_towers_raise_config_errors():
    model = tiny_vit()
    with pytest.raises(ConfigError, match="2 per-layer ints"):
        set_token_merging(model, [1, 2, 3])
    with pytest.raises(ConfigError, match="r >= 0"):
        merge_schedule(-1, 4)
    swin = zir.create_model("swin_micro_patch2_window4_32")
    with pytest.raises(ConfigError, match="ViT tower; got SwinTransformer"):
        set_token_merging(swin, 2)
