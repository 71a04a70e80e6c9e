"""Towers without a class token share one mean-pooled head: pooling, embeddings and head resets."""

import pytest
import torch

import zir
from zir.models.pooled import MeanPooledHead


@pytest.mark.parametrize("name,side", [("swin_micro_patch2_window4_32", 32), ("mobilevitv2_050", 64),
                                       ("efficientvit_m0", 64)])
def test_mean_pooled_towers_pool_embed_and_reset(name, side):
    torch.manual_seed(0)
    tower = zir.create_model(name, num_classes=5).eval()
    assert isinstance(tower, MeanPooledHead)
    images = torch.randn(2, 3, side, side)
    tokens = tower.forward_tokens(images)
    torch.testing.assert_close(tower.forward_head(tokens, pre_logits=True), tokens.mean(dim=1))
    assert tower(images).shape == (2, 5)
    tower.reset_classifier(3)
    assert tower(images).shape == (2, 3) and tower.num_classes == 3
    tower.reset_classifier(0)
    assert tower(images).shape == (2, tower.num_features)


@pytest.mark.parametrize("name", ["swin_micro_patch2_window4_32", "mobilevitv2_050", "efficientvit_m0"])
def test_mean_pooled_towers_take_avg_pooling_and_refuse_the_class_token(name):
    # a recipe that sets global_pool: avg for its ViT (clip, siglip, coca) also builds these towers
    assert isinstance(zir.create_model(name, global_pool="avg"), MeanPooledHead)
    with pytest.raises(zir.errors.ConfigError, match="global_pool must be 'avg'.*got 'token'"):
        zir.create_model(name, global_pool="token")
