"""The ViT tower: token dropping, prefix tokens, pooling, resampling, checkpointing, the interface."""

import pytest
import torch

import zir
from helpers import random_images, tiny_vit
from zir.errors import ConfigError, ShapeError
from zir.models.vit import gather_tokens
from zir.nn import sincos_2d


def _random_keep(b, n, k, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 2, "embed_prefix": False}, {"pos_embed": "sincos"}, {"stem": "conv"}])
def test_keep_equals_encoding_the_gathered_tokens_by_hand(kw):
    model, x = tiny_vit(**kw), random_images(seed=1)
    keep = _random_keep(2, 64, 16)
    got = model.forward_tokens(x, keep)
    assert got.shape == (2, model.num_prefix_tokens + 16, 64)

    hidden = torch.tensor([[j not in keep[i].tolist() for j in range(64)] for i in range(2)])
    patches = model.patch_embed(x, hidden) + model.pos_embed  # a conv stem blanks the dropped patches' pixels
    kept = torch.stack([patches[i, keep[i]] for i in range(2)])
    tokens = torch.cat([model.prefix_tokens(2), kept], dim=1)
    for block in model.blocks:
        tokens = block(tokens)
    torch.testing.assert_close(got, model.norm(tokens), atol=1e-5, rtol=1e-5)


def test_dropped_patches_never_reach_the_encoder():
    model, x = tiny_vit(), random_images(seed=1)
    keep = torch.arange(0, 64, 2).repeat(2, 1)  # even patches only
    changed = x.clone()
    changed[:, :, 0:4, 4:8] += 10.0  # patch 1 (odd): dropped
    torch.testing.assert_close(model.forward_tokens(x, keep), model.forward_tokens(changed, keep))
    changed[:, :, 0:4, 0:4] += 10.0  # patch 0: kept
    assert not torch.allclose(model.forward_tokens(x, keep), model.forward_tokens(changed, keep))
    everything = torch.arange(64).repeat(2, 1)
    torch.testing.assert_close(model.forward_tokens(x, everything), model.forward_tokens(x), atol=1e-5, rtol=1e-5)


def test_keep_is_validated():
    model, x = tiny_vit(), random_images(seed=1)
    with pytest.raises(ShapeError, match="integer"):
        model.forward_tokens(x, torch.zeros(2, 4))
    with pytest.raises(ShapeError, match=r"\[0, 64\)"):
        model.forward_tokens(x, torch.full((2, 4), 64))


def test_gather_tokens_picks_rows_per_sample():
    tokens = torch.arange(2 * 5 * 3.0).reshape(2, 5, 3)
    keep = torch.tensor([[4, 0], [1, 1]])
    torch.testing.assert_close(gather_tokens(tokens, keep), torch.stack([tokens[0, [4, 0]], tokens[1, [1, 1]]]))


def test_learned_position_embeddings_are_resampled_for_other_resolutions():
    model = tiny_vit()
    x = random_images(h=48, w=64, seed=1)
    tokens = model.forward_tokens(x)
    assert tokens.shape == (2, 1 + 12 * 16, 64)
    table = model.patch_pos_embed((12, 16))
    assert table.shape == (1, 192, 64)
    assert model.patch_pos_embed((8, 8)) is model.pos_embed
    # a constant table stays constant when resampled: the interpolation does not invent structure
    with torch.no_grad():
        model.pos_embed.fill_(0.5)
    torch.testing.assert_close(model.patch_pos_embed((12, 16)), torch.full((1, 192, 64), 0.5), atol=1e-6, rtol=0)


def test_sincos_position_embeddings_are_recomputed_not_stored():
    model = tiny_vit(pos_embed="sincos")
    assert "pos_embed" not in model.state_dict()
    torch.testing.assert_close(model.patch_pos_embed((4, 6)), sincos_2d((4, 6), 64)[None])
    assert model(random_images(h=16, w=24, seed=1)).shape == (2, 10)


def test_distillation_token_has_its_own_head():
    model = zir.create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=4, num_classes=7).eval()
    x = random_images(seed=1)
    tokens = model.forward_tokens(x)
    assert model.num_prefix_tokens == 2 and tokens.shape[1] == 2 + 64
    cls_logits, dist_logits = model.forward_head(tokens, distilled=True)
    torch.testing.assert_close(cls_logits, model.head(tokens[:, 0]))
    torch.testing.assert_close(dist_logits, model.head_dist(tokens[:, 1]))
    torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)
    assert not torch.allclose(cls_logits, dist_logits)


def test_registers_are_prefix_tokens_that_mean_pooling_ignores():
    model = tiny_vit(reg_tokens=4, embed_prefix=False, global_pool="avg")
    x = random_images(seed=1)
    tokens = model.forward_tokens(x)
    assert model.num_prefix_tokens == 5 and tokens.shape[1] == 5 + 64
    assert model.prefix_pos_embed is None
    torch.testing.assert_close(model.pool(tokens), tokens[:, 5:].mean(1))
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 5:].mean(1))


def test_fc_norm_normalises_after_pooling():
    model = tiny_vit(global_pool="avg", fc_norm=True)
    tokens = model.forward_tokens(random_images(seed=1))
    pooled = model.pool(tokens)
    torch.testing.assert_close(pooled, model.fc_norm(tokens[:, 1:].mean(1)))


def test_gradient_checkpointing_gives_the_same_gradients():
    x = random_images(seed=1)
    grads = []
    for enable in (False, True):
        model = tiny_vit().train()
        model.set_grad_checkpointing(enable)
        model(x).square().mean().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_attention_weights_come_from_the_same_forward():
    model, x = tiny_vit(), random_images(seed=1)
    tokens, weights = model.forward_with_attention(x)
    torch.testing.assert_close(tokens, model.forward_tokens(x), atol=1e-5, rtol=1e-5)
    assert len(weights) == 2 and weights[-1].shape == (2, 2, 65, 65)
    torch.testing.assert_close(weights[-1].sum(-1), torch.ones(2, 2, 65))


def test_attention_kernels_give_the_same_outputs():
    model, x = tiny_vit(), random_images(seed=1)
    model.set_attention_impl("math")
    math_out = model(x)
    model.set_attention_impl("sdpa")
    torch.testing.assert_close(model(x), math_out, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="auto, sdpa, math"):
        model.set_attention_impl("flash")


def test_reset_classifier_and_headless_towers():
    model = tiny_vit()
    model.reset_classifier(3)
    assert model(random_images(seed=1)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(random_images(seed=1)).shape == (2, 64)
    with pytest.raises(ConfigError, match="class token"):
        tiny_vit(class_token=False, global_pool="avg").reset_classifier(3, global_pool="token")


def test_weight_decay_exclusions_and_layer_indices():
    model = tiny_vit(reg_tokens=1)
    assert model.no_weight_decay() == {"cls_token", "register_tokens", "pos_embed", "prefix_pos_embed"}
    assert model.layer_index("pos_embed") == 0
    assert model.layer_index("blocks.1.mlp.fc1.weight") == 2
    assert model.layer_index("head.weight") == 3


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match="global_pool"):
        tiny_vit(global_pool="max")
    with pytest.raises(ConfigError, match="class_token"):
        tiny_vit(class_token=False)
    with pytest.raises(ConfigError, match="pos_embed"):
        tiny_vit(pos_embed="rope")
