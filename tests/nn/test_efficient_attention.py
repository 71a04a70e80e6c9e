"""Separable (linear) and cascaded group attention, and the ViT tower built on them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from zir.errors import ConfigError
from zir.models.efficient import EfficientAttentionViT
from zir.models.tome import set_token_merging
from zir.nn import Attention
from zir.nn.linear_attention import CascadedGroupAttention, SeparableSelfAttention


def reference_separable(attn: SeparableSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """MobileViT v2 separable self-attention written out token by token."""
    D = attn.dim
    W, b = attn.qkv.weight, attn.qkv.bias
    wq, bq = W[0], b[0]
    Wk, bk, Wv, bv = W[1:1 + D], b[1:1 + D], W[1 + D:], b[1 + D:]
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        scores = torch.stack([wq @ x[n, i] + bq for i in range(x.shape[1])])
        weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
        context = sum(weights[i] * (Wk @ x[n, i] + bk) for i in range(x.shape[1]))
        for j in range(x.shape[1]):
            gated = torch.relu(Wv @ x[n, j] + bv) * context
            out[n, j] = attn.proj.weight @ gated + attn.proj.bias
    return out


def test_separable_attention_equals_written_out_reference():
    torch.manual_seed(0)
    attn = SeparableSelfAttention(8).eval()
    x = torch.randn(2, 7, 8)
    with torch.no_grad():
        assert torch.allclose(attn(x), reference_separable(attn, x), atol=1e-5)


def test_separable_weights_and_key_mask():
    torch.manual_seed(0)
    attn = SeparableSelfAttention(8).eval()
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        out, weights = attn(x, need_weights=True)
        assert weights.shape == (2, 1, 6, 6)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 1, 6))
        assert torch.equal(weights[:, :, 0], weights[:, :, 5])  # one distribution shared by every query
        # Masking the last two keys = attending over the first four tokens only (for the context).
        mask = torch.tensor([True] * 4 + [False] * 2).view(1, 1, 1, 6)
        masked = attn(x, attn_mask=mask)
        assert torch.allclose(masked[:, :4], attn(x[:, :4]), atol=1e-6)
        assert torch.allclose(attn(x, attn_mask=torch.zeros(1, 1, 1, 6)), out)
    with pytest.raises(ConfigError, match=r"key mask of shape \(B, 1, 1, N\)"):
        attn(x, attn_mask=torch.ones(6, 6, dtype=torch.bool))


def attention_flops(module: torch.nn.Module, tokens: int, dim: int = 32) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.randn(1, tokens, dim))
    return counter.get_total_flops()


def test_separable_cost_is_linear_in_tokens_and_softmax_cost_is_not():
    torch.manual_seed(0)
    separable, softmax = SeparableSelfAttention(32).eval(), Attention(32, 4).eval()
    softmax.impl = "math"  # explicit matmuls, which the counter sees
    assert attention_flops(separable, 1024) == 4 * attention_flops(separable, 256)
    assert attention_flops(softmax, 1024) > 6 * attention_flops(softmax, 256)


def reference_cascaded(attn: CascadedGroupAttention, x: torch.Tensor) -> torch.Tensor:
    """Cascaded group attention written out head by head with an explicit softmax."""
    groups = x.chunk(attn.num_heads, dim=-1)
    outs = []
    for i, qkv in enumerate(attn.qkvs):
        feat = groups[i] if i == 0 else groups[i] + outs[-1]
        q, k, v = qkv(feat).split([attn.key_dim, attn.key_dim, attn.head_dim], dim=-1)
        scores = q @ k.transpose(1, 2) / attn.key_dim**0.5
        outs.append(scores.softmax(-1) @ v)
    return attn.proj(torch.relu(torch.cat(outs, dim=-1)))


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_cascaded_group_attention_equals_written_out_reference(impl):
    torch.manual_seed(0)
    attn = CascadedGroupAttention(24, num_heads=3, key_dim=4).eval()
    attn.impl = impl
    x = torch.randn(2, 9, 24)
    with torch.no_grad():
        out, weights = attn(x, need_weights=True)
        assert torch.allclose(out, reference_cascaded(attn, x), atol=1e-5)
        assert torch.allclose(attn(x), out, atol=1e-5)
    assert weights.shape == (2, 3, 9, 9)


def test_cascade_feeds_each_head_the_previous_heads_output():
    torch.manual_seed(0)
    attn = CascadedGroupAttention(8, num_heads=2, key_dim=4).eval()
    x = torch.randn(1, 5, 8)
    y = x.clone()
    y[..., :4] += torch.randn(1, 5, 4)  # change only the first group
    with torch.no_grad():
        captured = []
        hook = attn.proj.register_forward_hook(lambda m, i, o: captured.append(i[0]))
        attn(x), attn(y)
        hook.remove()
    # The second head's output changes although its own channel group did not: the cascade carries it.
    assert not torch.allclose(captured[0][..., 4:], captured[1][..., 4:])


@pytest.mark.parametrize("kind", ["separable", "cascaded_group", "softmax"])
def test_efficient_attention_vit_keeps_the_tower_interface(kind):
    torch.manual_seed(0)
    model = EfficientAttentionViT(attention=kind, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                  num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    keep = torch.stack([torch.randperm(16)[:6] for _ in range(2)])
    tokens = model.forward_tokens(x, keep)
    assert tokens.shape == (2, 1 + 6, 32)
    assert model(x).shape == (2, 5)
    _, maps = model.forward_with_attention(x)
    assert maps[0].shape[-2:] == (17, 17)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.blocks[0].attn.parameters())


def test_efficient_attention_errors():
    with pytest.raises(ConfigError, match="attention must be one of"):
        EfficientAttentionViT(attention="performer", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ConfigError, match="qk_norm=False"):
        EfficientAttentionViT(attention="separable", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                              qk_norm=True)
    model = EfficientAttentionViT(attention="separable", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ConfigError, match="softmax attention"):
        set_token_merging(model, 2)


def test_zoo_names_build_with_overrides():
    import zir

    for name in ("vit_micro_sepattn_patch4_32", "vit_micro_cgattn_patch4_32"):
        with torch.device("meta"):
            model = zir.create_model(name, num_classes=3, depth=2)
        assert isinstance(model, EfficientAttentionViT) and model.head.out_features == 3 and len(model.blocks) == 2
