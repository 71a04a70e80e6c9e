"""MobileViT v2 family: published sizes, separable attention in conv form, sizes, the tower interface."""

from __future__ import annotations

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.models import count_parameters
from zir.models.mobilevit import ConvSeparableAttention, MobileViTv2, MobileViTv2Block, make_divisible
from zir.nn.linear_attention import SeparableSelfAttention


def tiny(**overrides) -> MobileViTv2:
    torch.manual_seed(0)
    return MobileViTv2(**{"img_size": 64, "width_multiplier": 0.25, "transformer_depths": (1, 1, 1),
                          "num_classes": 4, **overrides}).eval()


@pytest.mark.parametrize("name,count", [
    ("mobilevitv2_050", 1_370_593), ("mobilevitv2_075", 2_866_009), ("mobilevitv2_100", 4_901_841),
    ("mobilevitv2_125", 7_478_089), ("mobilevitv2_150", 10_594_753), ("mobilevitv2_175", 14_251_833),
    ("mobilevitv2_200", 18_449_329),
])
def test_published_parameter_counts(name, count):
    assert count_parameters(name) == count


def test_make_divisible():
    assert make_divisible(64) == 64 and make_divisible(60) == 64 and make_divisible(3) == 8
    assert make_divisible(92) == 96 and make_divisible(19) == 24  # never more than 10% below


def test_conv_separable_attention_equals_the_token_form_per_pixel_position():
    # On (B, C, P, N), each of the P pixel positions attends over the N patches on its own: the same as
    # SeparableSelfAttention on (B * P, N, C) tokens with the 1x1 conv weights as linear weights.
    torch.manual_seed(0)
    conv = ConvSeparableAttention(6).eval()
    tokens = SeparableSelfAttention(6).eval()
    with torch.no_grad():
        tokens.qkv.weight.copy_(conv.qkv_proj.weight[:, :, 0, 0])
        tokens.qkv.bias.copy_(conv.qkv_proj.bias)
        tokens.proj.weight.copy_(conv.out_proj.weight[:, :, 0, 0])
        tokens.proj.bias.copy_(conv.out_proj.bias)
        x = torch.randn(2, 6, 4, 10)  # B, C, P, N
        expected = tokens(x.permute(0, 2, 3, 1).reshape(8, 10, 6)).reshape(2, 4, 10, 6).permute(0, 3, 1, 2)
        assert torch.allclose(conv(x), expected, atol=1e-6)


def test_block_attends_across_patches_of_the_same_pixel_position_only():
    torch.manual_seed(0)
    block = MobileViTv2Block(8, depth=1).eval()
    x = torch.randn(1, 8, 8, 8)
    assert block(x).shape == (1, 8, 8, 8)
    assert block(torch.randn(1, 8, 7, 9)).shape == (1, 8, 8, 10)  # resized up to a multiple of the patch


@pytest.mark.parametrize("size,tokens", [((64, 64), 4), ((128, 64), 8), ((96, 64), 8), ((70, 50), 8)])
def test_any_input_size(size, tokens):
    # Odd grids before a MobileViT v2 block are resized up to even ones (96x64 ends at 3x2 -> 4x2).
    model = tiny()
    with torch.no_grad():
        assert model.forward_tokens(torch.randn(1, 3, *size)).shape == (1, tokens, 128)


def test_tower_interface_and_errors():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        assert torch.allclose(model.forward_head(tokens), model(x))
        assert model.forward_head(tokens, pre_logits=True).shape == (2, 128)
        assert [m.shape[1] for m in model.forward_maps(x)] == [16, 32, 64, 96, 128]
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    model.set_grad_checkpointing(True)
    model.train()
    model(x).sum().backward()
    assert model.stages[4][1].transformer[0].attn.qkv_proj.weight.grad is not None
    with pytest.raises(ConfigError, match="cannot drop or mask tokens"):
        model.forward_tokens(x, keep=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(2, 4, 64, 64))
    with pytest.raises(ConfigError, match="width_multiplier"):
        MobileViTv2(width_multiplier=0)
