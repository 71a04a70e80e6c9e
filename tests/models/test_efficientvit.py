"""EfficientViT (MSRA) family: published sizes, any input size, local windows, the tower interface."""

from __future__ import annotations

import pytest
import torch

import zir
from zir.errors import ConfigError, ShapeError
from zir.models import count_parameters
from zir.models.efficientvit import EfficientViT, LocalWindowAttention, abs_offset_index


TINY = dict(img_size=64, embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=(2, 2, 2), window_size=(4, 4, 4),
            kernels=(3, 3), num_classes=5)


def tiny(**overrides) -> EfficientViT:
    torch.manual_seed(0)
    return EfficientViT(**{**TINY, **overrides}).eval()


@pytest.mark.parametrize("name,count", [
    ("efficientvit_m0", 2_349_436), ("efficientvit_m1", 2_980_560), ("efficientvit_m2", 4_187_554),
    ("efficientvit_m3", 6_900_722), ("efficientvit_m4", 8_804_228), ("efficientvit_m5", 12_473_772),
])
def test_published_parameter_counts(name, count):
    assert count_parameters(name) == count


def test_last_stage_window_shrinks_to_its_grid_at_the_native_size():
    with torch.device("meta"):
        model = zir.create_model("efficientvit_m0")  # stage grids 14, 7, 4 at 224
    windows = [stage.blocks[0].mixer.m.window for stage in model.stages]
    assert windows == [7, 7, 4]
    assert model.stages[2].blocks[0].mixer.m.attn.attention_biases.shape == (4, 16)


def test_abs_offset_index_is_symmetric_and_covers_every_offset():
    index, count = abs_offset_index(3)
    assert index.shape == (9, 9) and count == 9
    assert torch.equal(index, index.T)
    assert sorted(index.unique().tolist()) == list(range(9))
    assert index[0, 8] == 2 * 3 + 2  # (0,0) to (2,2): offset rows 2, cols 2


def test_local_windows_attend_within_each_window_only():
    torch.manual_seed(0)
    layer = LocalWindowAttention(8, key_dim=4, num_heads=2, window=4, kernels=(3, 3)).eval()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        out = layer(x)
        # Each 4x4 window is computed as if it were the whole input.
        assert torch.allclose(out[..., 4:, :4], layer.attn(x[..., 4:, :4]), atol=1e-6)
        # A map the window does not divide is zero-padded, and the output cropped back.
        assert layer(torch.randn(2, 8, 6, 9)).shape == (2, 8, 6, 9)


@pytest.mark.parametrize("size,tokens", [((64, 64), 1), ((128, 64), 2), ((96, 80), 4), ((200, 136), 12)])
def test_any_input_size(size, tokens):
    model = tiny()
    with torch.no_grad():
        feats = model.forward_tokens(torch.randn(1, 3, *size))
    assert feats.shape == (1, tokens, 32)


def test_tower_interface():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        assert model.forward_head(tokens, pre_logits=True).shape == (2, 32)
        assert torch.allclose(model.forward_head(tokens), model(x))
        assert [m.shape[1] for m in model.forward_maps(x)] == [16, 24, 32]
    model.reset_classifier(0)
    assert model(x).shape == (2, 32)
    model.reset_classifier(3)
    assert model.eval()(x).shape == (2, 3)
    assert model.no_weight_decay() and all(n.endswith("attention_biases") for n in model.no_weight_decay())
    assert model.num_prefix_tokens == 0 and model.num_features == model.embed_dim == 32


def test_grad_checkpointing_matches():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), model.stages[1].blocks[0].mixer.m.attn.qkvs[0].conv.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_errors():
    model = tiny()
    with pytest.raises(ConfigError, match="cannot drop or mask tokens"):
        model.forward_tokens(torch.randn(1, 3, 64, 64), keep=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"expected images of shape \(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ConfigError, match="one entry per stage"):
        EfficientViT(**{**TINY, "depth": (1, 1)})
    with pytest.raises(ConfigError, match="kernel size per head"):
        EfficientViT(**{**TINY, "kernels": (3,)})
