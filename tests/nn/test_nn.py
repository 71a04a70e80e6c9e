"""Building blocks: attention kernels agree, weights are a softmax, embeddings and regularisers behave."""

import math

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.nn import Attention, DropPath, LayerScale, PatchEmbed, attend, resample_pos_embed, sincos_2d


def _qkv(B=2, H=3, N=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, d, generator=g) for _ in range(3)]


def test_math_and_sdpa_attention_agree_and_weights_are_the_softmax():
    q, k, v = _qkv()
    out_sdpa, none = attend(q, k, v, impl="sdpa")
    out_math, weights = attend(q, k, v, impl="math", need_weights=True)
    assert none is None
    torch.testing.assert_close(out_sdpa, out_math, atol=1e-5, rtol=1e-5)
    reference = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    torch.testing.assert_close(weights, reference)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_are_respected_by_both_kernels(kind):
    q, k, v = _qkv(N=5)
    allowed = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    mask = allowed if kind == "bool" else torch.zeros(5, 5).masked_fill(~allowed, float("-inf"))
    out_sdpa, _ = attend(q, k, v, mask, impl="sdpa")
    out_math, weights = attend(q, k, v, mask, impl="math", need_weights=True)
    torch.testing.assert_close(out_sdpa, out_math, atol=1e-5, rtol=1e-5)
    assert torch.all(weights[..., ~allowed] == 0)
    # the first query may only look at the first key
    torch.testing.assert_close(out_math[:, :, 0], v[:, :, 0])


def test_attention_module_returns_weights_in_the_same_pass():
    torch.manual_seed(0)
    attn = Attention(24, num_heads=3, qk_norm=True).eval()
    x = torch.randn(2, 6, 24)
    plain = attn(x)
    out, weights = attn(x, need_weights=True)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 3, 6, 6)
    assert isinstance(attn.q_norm, torch.nn.LayerNorm) and isinstance(attn.k_norm, torch.nn.LayerNorm)
    with pytest.raises(ConfigError, match="divisible"):
        Attention(25, num_heads=3)


def test_sincos_table_encodes_rows_and_columns():
    table = sincos_2d((3, 4), 16)
    assert table.shape == (12, 16)
    # position (0, 0): every sine is 0 and every cosine is 1
    torch.testing.assert_close(table[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    # patches in the same row share the row half; in the same column, the column half
    torch.testing.assert_close(table[1, :8], table[2, :8])
    torch.testing.assert_close(table[0, 8:], table[4, 8:])
    assert len({tuple(r.tolist()) for r in table}) == 12
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_2d((2, 2), 6)


def test_resampling_keeps_a_constant_table_and_changes_the_grid():
    constant = torch.full((1, 16, 5), 0.25)
    out = resample_pos_embed(constant, (4, 4), (6, 8))
    assert out.shape == (1, 48, 5)
    torch.testing.assert_close(out, torch.full((1, 48, 5), 0.25), atol=1e-6, rtol=0)
    same = torch.randn(1, 16, 5)
    assert resample_pos_embed(same, (4, 4), (4, 4)) is same
    ramp = torch.arange(4.0).repeat_interleave(4).reshape(1, 16, 1)  # value = row index
    rows = resample_pos_embed(ramp, (4, 4), (8, 4)).reshape(8, 4)[:, 0]
    assert torch.all(rows[1:] >= rows[:-1])


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.ones(1000, 3, 4)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    y = layer(x)
    per_sample = y.reshape(1000, -1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert abs(y.mean().item() - 1.0) < 0.1


def test_layer_scale_starts_small():
    scale = LayerScale(4, init_values=1e-5)
    torch.testing.assert_close(scale(torch.ones(2, 4)), torch.full((2, 4), 1e-5))


def test_patch_embed_equals_unfold_then_linear_on_non_square_images():
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=(8, 12), patch_size=4, in_chans=2, embed_dim=5)
    x = torch.randn(3, 2, 8, 12)
    tokens = embed(x)
    assert tokens.shape == (3, 6, 5) and embed.grid_size == (2, 3)
    patches = torch.nn.functional.unfold(x, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, C*16)
    manual = patches @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens, manual, atol=1e-5, rtol=1e-5)
    with pytest.raises(ShapeError, match="channels"):
        embed(torch.randn(1, 3, 8, 12))
    with pytest.raises(ShapeError, match="not divisible"):
        embed(torch.randn(1, 2, 9, 12))
    with pytest.raises(ConfigError, match="not divisible"):
        PatchEmbed(img_size=30, patch_size=4)
