"""Less attention (LaViT): the reused layer against written-out references, the ViT option, its parameter
savings, `keep`, gradients, and the diagonality-preserving loss."""

import pytest
import torch

import zir
from zir.errors import ConfigError, ShapeError
from zir.models.efficient import EfficientAttentionViT
from zir.models.tome import set_token_merging
from zir.models.vit import VisionTransformer
from zir.models.weights import load_weights
from zir.nn import Attention
from zir.nn.less_attention import (
    LessAttention,
    ScoredAttention,
    diagonality_preserving_loss,
    less_attention_schedule,
)

D, H = 32, 2


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=D, depth=4, num_heads=H, num_classes=0)
    return VisionTransformer(**{**args, **kwargs}).eval()


def reference_less_attention(layer, x, scores, positions=None):
    """softmax(T(scores)) V, projected, written out token by token with explicit sums."""
    B, N, _ = x.shape
    hd = D // H
    v = x @ layer.v.weight.T + layer.v.bias
    out = torch.zeros(B, N, D)
    for b in range(B):
        pos = list(range(N)) if positions is None else positions[b].tolist()
        for h in range(H):
            new = torch.zeros(N, N)
            for i in range(N):
                for j in range(N):
                    if layer.transform == "heads":
                        new[i, j] = sum(layer.head_mix[h, g] * scores[b, g, i, j] for g in range(H))
                    else:
                        new[i, j] = sum(layer.token_rows[pos[i], pos[p]] * scores[b, h, p, q] * layer.token_cols[pos[j], pos[q]]
                                        for p in range(N) for q in range(N))
            for i in range(N):
                weights = torch.exp(new[i] - new[i].max())
                weights = weights / weights.sum()
                out[b, i, h * hd:(h + 1) * hd] = sum(weights[j] * v[b, j, h * hd:(h + 1) * hd] for j in range(N))
    return out @ layer.proj.weight.T + layer.proj.bias


@pytest.mark.parametrize("transform", ["heads", "tokens"])
def test_less_attention_layer_matches_written_out_reference(transform):
    torch.manual_seed(1)
    layer = LessAttention(D, H, transform=transform, num_tokens=7)
    with torch.no_grad():  # move the transformation away from identity so the reference checks the mixing
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 5 if transform == "tokens" else 4, D)
    scores = torch.randn(2, H, x.shape[1], x.shape[1])
    positions = torch.tensor([[0, 2, 3, 5, 6], [0, 1, 4, 5, 6]]) if transform == "tokens" else None
    out, new_scores, weights = layer.forward_scores(x, scores, positions, need_weights=True)
    expected = reference_less_attention(layer, x, scores, positions)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(weights, new_scores.softmax(-1)) and weights.shape == (2, H, x.shape[1], x.shape[1])
    if transform == "tokens":  # without positions: the full 7 x 7 maps
        full = torch.randn(1, H, 7, 7)
        out7 = layer.forward_scores(torch.randn(1, 7, D), full)[1]
        assert torch.allclose(out7, layer.token_rows @ full @ layer.token_cols.T, atol=1e-5)


def test_scored_attention_is_softmax_attention_and_hands_on_its_scores():
    torch.manual_seed(2)
    plain = Attention(D, H)
    plain.impl = "math"
    scored = ScoredAttention(D, H)
    scored.load_state_dict(plain.state_dict())
    x = torch.randn(2, 6, D)
    out, weights = plain(x, need_weights=True)
    s_out, scores, s_weights = scored.forward_scores(x, need_weights=True)
    q, k, _ = (x @ plain.qkv.weight.T + plain.qkv.bias).reshape(2, 6, 3, H, D // H).permute(2, 0, 3, 1, 4)
    assert torch.allclose(scores, q @ k.transpose(-2, -1) / (D // H) ** 0.5, atol=1e-6)
    assert torch.allclose(s_out, out, atol=1e-6) and torch.allclose(s_weights, weights, atol=1e-6)


@pytest.mark.parametrize("transform", ["heads", "tokens"])
def test_identity_transform_reuses_the_earlier_attention(transform):
    model = tiny_vit(less_attention=1, less_attention_transform=transform)
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 8, 11, 12]])
    for k in (None, keep):
        tokens, maps = model.forward_with_attention(x, k)
        n = 1 + (16 if k is None else 5)
        assert len(maps) == 4 and maps[0].shape == (2, H, n, n)
        for reused in maps[1:]:
            assert torch.allclose(reused, maps[0], atol=1e-6)
        assert torch.allclose(tokens, model.forward_tokens(x, k), atol=1e-6)
    # a trained (non-identity) transformation gives different attention
    with torch.no_grad():
        transform_param = model.blocks[1].attn.head_mix if transform == "heads" else model.blocks[1].attn.token_rows
        transform_param.add_(0.5 * torch.randn_like(transform_param))
    _, maps = model.forward_with_attention(x)
    assert not torch.allclose(maps[1], maps[0], atol=1e-3)


@pytest.mark.parametrize("transform", ["heads", "tokens"])
def test_reused_blocks_drop_queries_and_keys_by_an_exact_count(transform):
    full = tiny_vit()
    less = tiny_vit(less_attention=1, less_attention_stages=2, less_attention_transform=transform)
    assert [b.reuse for b in less.blocks] == [False, True, False, True]
    for block in less.blocks:
        names = {n for n, _ in block.attn.named_parameters()}
        assert ("qkv.weight" in names) != block.reuse and ("v.weight" in names) == block.reuse
    tokens = 1 + 16  # CLS + a 4 x 4 patch grid
    added = H * H if transform == "heads" else 2 * tokens * tokens
    per_block = 2 * D * D + 2 * D - added  # the q and k rows of qkv (weights and biases), minus the transform
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(less) == 2 * per_block
    assert per_block == (2108 if transform == "heads" else 1534)


def test_zoo_entry_counts_and_runs():
    count = lambda name: sum(p.numel() for p in zir.create_model(name).parameters())  # noqa: E731
    diff = count("vit_micro_patch4_32") - count("vit_micro_lessattn_patch4_32")
    assert diff == 3 * (2 * 128 * 128 + 2 * 128 - 4 * 4)
    model = zir.create_model("vit_micro_lessattn_patch4_32", num_classes=10, depth=2)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_shapes_with_and_without_keep_and_gradients_reach_the_transform():
    for transform in ("heads", "tokens"):
        model = tiny_vit(less_attention=1, less_attention_transform=transform, num_classes=3).train()
        x = torch.randn(3, 3, 16, 16)
        keep = torch.stack([torch.randperm(16)[:6] for _ in range(3)])
        assert model.forward_tokens(x).shape == (3, 17, D)
        assert model.forward_tokens(x, keep).shape == (3, 7, D)
        assert model(x).shape == (3, 3)
        model.pool(model.forward_tokens(x, keep)).square().sum().backward()
        grads = [b.attn.head_mix.grad if transform == "heads" else b.attn.token_rows.grad for b in model.blocks[1:]]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        if transform == "tokens":  # only the kept positions' rows and columns are touched
            kept = torch.zeros(17, dtype=torch.bool)
            kept[0], kept[keep.flatten() + 1] = True, True
            assert torch.equal(grads[0].abs().sum(1) > 0, kept)
        assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # through the handed-on scores too


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for ckpt in (False, True):
        model = tiny_vit(less_attention=2)
        with torch.no_grad():
            model.blocks[3].attn.head_mix.add_(0.2)
        model.set_grad_checkpointing(ckpt)
        model.forward_tokens(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_schedule_splits_blocks_into_stages():
    assert less_attention_schedule(12, 1, 3) == [False, True, True, True] * 3
    assert less_attention_schedule(6, 2) == [False, False, True, True, True, True]
    assert less_attention_schedule(5, 1, 2) == [False, True, False, True, True]
    for depth, full, stages in ((4, 0, 1), (4, 2, 2), (4, 1, 5)):
        with pytest.raises(ConfigError, match="less_attention"):
            less_attention_schedule(depth, full, stages)


def test_clear_errors():
    with pytest.raises(ConfigError, match="less_attention_transform"):
        tiny_vit(less_attention=1, less_attention_transform="rows")
    with pytest.raises(ShapeError, match="built for 17 tokens"):
        tiny_vit(less_attention=1, less_attention_transform="tokens").forward_tokens(torch.randn(1, 3, 24, 24))
    model = tiny_vit(less_attention=1)
    assert model.forward_tokens(torch.randn(1, 3, 24, 24)).shape == (1, 37, D)  # heads: any input size
    with pytest.raises(ConfigError, match="standalone"):
        model.blocks[1](torch.randn(1, 5, D))
    with pytest.raises(ConfigError, match="does not combine"):
        EfficientAttentionViT(attention="separable", img_size=16, patch_size=4, embed_dim=D, depth=2, num_heads=H,
                              less_attention=1)
    with pytest.raises(ConfigError, match="softmax attention"):
        set_token_merging(model, 2)


def test_ibot_mask_token_forward_runs_through_the_reused_blocks():
    model = tiny_vit(less_attention=1, mask_token=True)
    x, mask = torch.randn(2, 3, 16, 16), torch.rand(2, 16) < 0.4
    out = model.forward_tokens(x, mask=torch.zeros(2, 16, dtype=torch.bool))
    assert torch.allclose(out, model.forward_tokens(x), atol=1e-6)
    assert model.forward_tokens(x, mask=mask).shape == (2, 17, D)


def test_diagonality_preserving_loss_by_hand():
    a = torch.tensor([[0.7, 0.3], [0.4, 0.6]]).view(1, 1, 2, 2)
    # symmetry |0.3 - 0.4| twice = 0.2; diagonal |0.7 - 0.3| + |0.6 - 0.4| = 0.6
    assert diagonality_preserving_loss(a).item() == pytest.approx(0.8)
    n = 5
    assert diagonality_preserving_loss(torch.full((2, 3, n, n), 1 / n)).item() == pytest.approx(0.0, abs=1e-6)
    assert diagonality_preserving_loss(torch.eye(n).expand(2, 3, n, n)).item() == pytest.approx(n * (n - 1))
    with pytest.raises(ShapeError):
        diagonality_preserving_loss(torch.ones(2, 3, 4))


def test_a_plain_checkpoint_loads_into_a_less_attention_tower():
    plain, less = tiny_vit(), tiny_vit(less_attention=1)
    with pytest.warns(UserWarning, match="3 less-attention blocks take only the values"):
        load_weights(less, plain.state_dict())
    for i in (1, 2, 3):
        assert torch.equal(less.blocks[i].attn.v.weight, plain.blocks[i].attn.qkv.weight[2 * D:])
        assert torch.equal(less.blocks[i].attn.v.bias, plain.blocks[i].attn.qkv.bias[2 * D:])
        assert torch.equal(less.blocks[i].attn.head_mix, torch.eye(H))
        assert torch.equal(less.blocks[i].mlp.fc1.weight, plain.blocks[i].mlp.fc1.weight)
    assert torch.equal(less.blocks[0].attn.qkv.weight, plain.blocks[0].attn.qkv.weight)
