"""Swin: window partition, the shifted-window mask, relative position bias, sizes, masking, errors."""

from __future__ import annotations

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.models import count_parameters, create_model, list_models
from zir.models.swin import SwinBlock, SwinTransformer
from zir.nn.window import (
    PatchMerging, WindowAttention, relative_position_index, shifted_window_mask, shifted_window_regions,
    window_and_shift, window_partition, window_reverse,
)


TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4),
            num_classes=7, mlp_ratio=2.0)


def tiny_swin(**overrides) -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(**{**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def swin() -> SwinTransformer:
    """A shared tiny tower for tests that do not change it."""
    return tiny_swin()


# -- windows -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid,window", [((8, 8), (4, 4)), ((6, 12), (3, 4)), ((7, 7), (7, 7)), ((4, 6), (1, 2))])
def test_window_partition_reverse_round_trip(grid, window):
    x = torch.randn(3, *grid, 5)
    windows = window_partition(x, window)
    nW = (grid[0] // window[0]) * (grid[1] // window[1])
    assert windows.shape == (3, nW, window[0] * window[1], 5)
    assert torch.equal(window_reverse(windows, window, grid), x)
    # A non-contiguous map (here a transposed one) partitions the same as its contiguous copy.
    flipped = x.transpose(1, 2)
    if grid[0] % window[1] == 0 and grid[1] % window[0] == 0:
        assert torch.equal(window_partition(flipped, window[::-1]), window_partition(flipped.contiguous(), window[::-1]))


def test_window_partition_groups_neighbouring_tokens():
    # Label each position by its row and column and check window 1 (top row, second column of windows).
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    x = torch.stack([rows, cols], dim=-1)[None].float()  # (1, 4, 8, 2)
    windows = window_partition(x, (2, 4))  # 2 x 2 windows of 2 x 4 tokens
    second = windows[0, 1]
    assert second[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert second[:, 1].tolist() == [4, 5, 6, 7, 4, 5, 6, 7]


def test_window_partition_rejects_indivisible_maps():
    with pytest.raises(ShapeError, match="not divisible into 4x4 windows"):
        window_partition(torch.zeros(1, 6, 8, 2), (4, 4))


def test_window_and_shift_clamps_small_grids():
    assert window_and_shift((8, 8), (4, 4), (2, 2)) == ((4, 4), (2, 2))
    assert window_and_shift((4, 2), (4, 4), (2, 2)) == ((4, 2), (0, 0))
    assert window_and_shift((8, 2), (4, 4), (2, 2)) == ((4, 2), (2, 0))


# -- the shifted-window mask ---------------------------------------------------------------------------
def test_shift_mask_separates_tokens_the_roll_brought_together():
    grid, window, shift = (8, 8), (4, 4), (2, 2)
    mask = shifted_window_mask(grid, window, shift)
    assert mask.shape == (4, 16, 16) and mask.dtype == torch.bool
    assert shifted_window_mask(grid, window, (0, 0)) is None
    # Reference: the original position of every rolled token; two tokens of a window may attend to each
    # other only if they were in the same half-window-offset window before the roll, without wrapping.
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    orig = torch.stack([(rows + 2) % 8, (cols + 2) % 8], dim=-1)  # rolled position -> original position
    band = lambda v: torch.bucketize(v.contiguous(), torch.tensor([2, 6]), right=True)  # noqa: E731  shifted windows
    region = band(orig[..., 0]) * 3 + band(orig[..., 1])
    win = window_partition(region[None, :, :, None], window)[0, :, :, 0]
    assert torch.equal(mask, win[:, :, None] == win[:, None, :])
    # The top-left window holds no wrapped token: it is unmasked. The bottom-right one mixes four regions.
    assert mask[0].all()
    assert mask[3].sum() == 4 * 4 * 4
    assert torch.equal(shifted_window_regions(grid, window, shift).unique(), torch.arange(9))


def changed_positions(block: SwinBlock, grid: tuple[int, int], source: tuple[int, int]) -> set[tuple[int, int]]:
    """Positions of a (1, H, W, C) map whose block output changes when one input token changes."""
    torch.manual_seed(1)
    x = torch.randn(1, *grid, block.norm1.normalized_shape[0])
    y = x.clone()
    y[0, source[0], source[1]] += 3.0 * torch.randn(x.shape[-1])  # not a constant: LayerNorm removes those
    with torch.no_grad():
        diff = (block(y) - block(x)).abs().amax(dim=-1)[0]
    return {tuple(p) for p in (diff > 1e-6).nonzero().tolist()}


def square(r0: int, r1: int, c0: int, c1: int) -> set[tuple[int, int]]:
    return {(r, c) for r in range(r0, r1) for c in range(c0, c1)}


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_shifted_block_never_attends_across_the_borders_the_shift_created(impl):
    torch.manual_seed(0)
    block = SwinBlock(8, 2, (4, 4), shifted=True).eval()
    block.attn.impl = impl
    # With an 8x8 grid, window 4 and shift 2, the shifted windows in image coordinates are the bands
    # [0, 2), [2, 6), [6, 8) in each direction: the roll wraps [0, 2) next to [6, 8), and the mask must cut it.
    assert changed_positions(block, (8, 8), (0, 0)) == square(0, 2, 0, 2)
    assert changed_positions(block, (8, 8), (7, 7)) == square(6, 8, 6, 8)
    assert changed_positions(block, (8, 8), (0, 7)) == square(0, 2, 6, 8)
    assert changed_positions(block, (8, 8), (3, 4)) == square(2, 6, 2, 6)
    assert changed_positions(block, (8, 8), (6, 1)) == square(6, 8, 0, 2)


def test_plain_block_attends_within_its_window_only():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, (4, 4), shifted=False).eval()
    assert changed_positions(block, (8, 8), (0, 0)) == square(0, 4, 0, 4)
    assert changed_positions(block, (8, 8), (5, 6)) == square(4, 8, 4, 8)


def test_shifted_block_without_the_mask_would_leak(monkeypatch):
    # The test above is meaningful: dropping the mask lets the wrapped tokens see each other.
    import zir.models.swin as swin

    monkeypatch.setattr(swin, "shifted_window_mask", lambda *args, **kwargs: None)
    torch.manual_seed(0)
    block = SwinBlock(8, 2, (4, 4), shifted=True).eval()
    assert changed_positions(block, (8, 8), (0, 0)) == square(0, 2, 0, 2) | square(0, 2, 6, 8) | square(
        6, 8, 0, 2) | square(6, 8, 6, 8)


# -- window attention and relative position bias --------------------------------------------------------
def reference_window_attention(attn: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Window by window, head by head: softmax(q k^T / sqrt(d) + bias (+ -inf where masked)) v."""
    B, nW, N, C = x.shape
    H, d = attn.num_heads, attn.head_dim
    wh, ww = attn.window_size
    out = torch.zeros(B, nW, N, C)
    for b in range(B):
        for w in range(nW):
            qkv = attn.qkv(x[b, w]).view(N, 3, H, d)
            heads = []
            for h in range(H):
                q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]
                scores = q @ k.T / d**0.5
                for i in range(N):
                    for j in range(N):
                        di, dj = i // ww - j // ww, i % ww - j % ww
                        scores[i, j] += attn.relative_position_bias_table[(di + wh - 1) * (2 * ww - 1) + dj + ww - 1, h]
                if mask is not None:
                    scores = scores.masked_fill(~mask[w], float("-inf"))
                heads.append(scores.softmax(-1) @ v)
            out[b, w] = attn.proj(torch.cat(heads, dim=-1))
    return out


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("masked", [False, True])
def test_window_attention_equals_written_out_reference(impl, masked):
    torch.manual_seed(0)
    attn = WindowAttention(12, 3, (2, 3)).eval()
    attn.impl = impl
    x = torch.randn(2, 4, 6, 12)
    mask = shifted_window_mask((4, 6), (2, 3), (1, 1)) if masked else None
    with torch.no_grad():
        assert torch.allclose(attn(x, (2, 3), mask), reference_window_attention(attn, x, mask), atol=1e-5)


def test_relative_position_index_depends_on_the_offset_only():
    index = relative_position_index((3, 4))
    assert index.shape == (12, 12)
    assert index.max() == 5 * 7 - 1 and index.min() == 0
    coords = [(i // 4, i % 4) for i in range(12)]
    by_offset: dict[tuple[int, int], set[int]] = {}
    for i, (ri, ci) in enumerate(coords):
        for j, (rj, cj) in enumerate(coords):
            by_offset.setdefault((ri - rj, ci - cj), set()).add(int(index[i, j]))
    assert all(len(v) == 1 for v in by_offset.values())  # one table row per offset
    assert len({next(iter(v)) for v in by_offset.values()}) == len(by_offset)  # distinct offsets, distinct rows


def test_smaller_window_reads_the_same_table_rows_for_the_same_offsets():
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, (4, 4))
    full, small = attn.position_bias((4, 4)), attn.position_bias((2, 3))
    # Token (r, c) of the small window sits at (r, c) of the full one; equal offsets, equal bias.
    for i in range(6):
        for j in range(6):
            fi, fj = (i // 3) * 4 + i % 3, (j // 3) * 4 + j % 3
            assert torch.equal(small[:, i, j], full[:, fi, fj])


def test_patch_merging_concatenates_2x2_neighbourhoods_in_the_papers_order():
    merge = PatchMerging(1)
    x = torch.arange(16.0).view(1, 4, 4, 1)
    captured = {}
    merge.norm.register_forward_hook(lambda m, i, o: captured.setdefault("cat", i[0]))
    assert merge(x).shape == (1, 2, 2, 2)
    # Top-left 2x2 neighbourhood holds 0, 1 / 4, 5: order (0,0), (1,0), (0,1), (1,1).
    assert captured["cat"][0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]
    with pytest.raises(ShapeError, match="even feature map"):
        merge(torch.zeros(1, 3, 4, 1))


# -- the tower -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,count",
    [("swin_tiny_patch4_window7_224", 28_288_354), ("swin_small_patch4_window7_224", 49_606_258),
     ("swin_base_patch4_window7_224", 87_768_224)],
)
def test_published_parameter_counts(name, count):
    assert count_parameters(name) == count


def test_zoo_lists_swin_and_cpu_configs_run():
    names = list_models("swin*")
    assert {"swin_tiny_patch4_window7_224", "swin_micro_patch2_window4_32", "swin_micro_patch4_window4_64"} <= set(names)
    with torch.device("meta"):
        model = create_model("swin_tiny_patch4_window7_224")
    assert model.num_features == model.embed_dim == 768 and model.num_prefix_tokens == 0
    assert model.feature_stride == (32, 32)


@pytest.mark.parametrize("size,tokens", [((32, 32), 16), ((64, 32), 32), ((16, 16), 4), ((32, 16), 8)])
def test_any_size_the_window_and_merges_divide(swin, size, tokens):
    x = torch.randn(1, 3, *size)  # patch 2, window 4, three stages: stride 8
    with torch.no_grad():
        feats = swin.forward_tokens(x)
        stages = swin.forward_stages(x)
    assert feats.shape == (1, tokens, 64)
    assert [tuple(s.shape[1:]) for s in stages] == [
        (16, size[0] // 2, size[1] // 2), (32, size[0] // 4, size[1] // 4), (64, size[0] // 8, size[1] // 8)]


@pytest.mark.parametrize(
    "size,message",
    [((31, 32), "not divisible by the patch size"),
     ((36, 32), r"stage 1 grid 18x16 is not divisible by the 4x4 window"),
     ((40, 32), r"stage 2 grid 10x8 is not divisible by the 4x4 window"),
     ((6, 32), r"the 3x16 grid before stage 2 cannot be halved")],
)
def test_sizes_that_do_not_fit_raise_one_clear_error(swin, size, message):
    with pytest.raises(ShapeError, match=message):
        swin(torch.randn(1, 3, *size))


def test_bad_configs_and_inputs_raise_zir_errors(swin):
    with pytest.raises(ShapeError, match="expected 3 image channels; got 1"):
        swin(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="not divisible by the 4x4 window"):
        SwinTransformer(**{**TINY, "img_size": 40})
    with pytest.raises(ConfigError, match="equal length"):
        SwinTransformer(**{**TINY, "num_heads": (1, 2)})
    with pytest.raises(ConfigError, match="divisible by its num_heads"):
        SwinTransformer(**{**TINY, "num_heads": (3, 2, 4)})


def test_tower_interface():
    model = tiny_swin()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        assert torch.equal(model.forward_features(x), tokens)
        assert torch.allclose(model.pool(tokens), tokens.mean(1))
        assert model.forward_head(tokens, pre_logits=True).shape == (2, 64)
        assert torch.allclose(model.forward_head(tokens), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    nwd = model.no_weight_decay()
    assert nwd and all(n.endswith("relative_position_bias_table") for n in nwd)
    names = dict(model.named_parameters())
    assert nwd <= set(names)
    assert model.layer_index("patch_embed.proj.weight") == 0
    assert model.layer_index("layers.0.blocks.1.attn.qkv.weight") == 2
    assert model.layer_index("layers.1.downsample.reduction.weight") == 2
    assert model.layer_index("layers.2.blocks.0.mlp.fc1.weight") == 5
    assert model.layer_index("norm.weight") == 7


def test_grad_checkpointing_gives_the_same_outputs_and_gradients():
    model = tiny_swin()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), model.layers[0].blocks[1].attn.qkv.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_sdpa_and_math_paths_agree():
    model = tiny_swin()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.set_attention_impl("math")
        a = model(x)
        model.set_attention_impl("sdpa")
        b = model(x)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ConfigError):
        model.set_attention_impl("flash")


# -- SimMIM-style masking --------------------------------------------------------------------------------
def test_masking_replaces_patches_with_the_mask_token():
    model = tiny_swin(mask_token=True)
    x = torch.randn(2, 3, 32, 32)
    N = 16 * 16
    with torch.no_grad():
        plain = model.forward_tokens(x)
        every = torch.arange(N).expand(2, N)
        assert torch.equal(model.forward_tokens(x, keep=every), plain)  # keeping all = no masking
        none_masked = torch.zeros(2, N, dtype=torch.bool)
        assert torch.equal(model.forward_tokens(x, mask=none_masked), plain)
        # Masking everything erases the image: two different images give the same tokens.
        all_masked = torch.ones(2, N, dtype=torch.bool)
        assert torch.allclose(model.forward_tokens(x, mask=all_masked), model.forward_tokens(torch.randn(2, 3, 32, 32), mask=all_masked))
        # keep and mask are two spellings of the same masking; the output keeps the full grid.
        keep = torch.stack([torch.randperm(N)[:64] for _ in range(2)])
        mask = torch.ones(2, N, dtype=torch.bool).scatter(1, keep, False)
        by_keep = model.forward_tokens(x, keep=keep)
        assert by_keep.shape == plain.shape
        assert torch.equal(by_keep, model.forward_tokens(x, mask=mask))
        assert not torch.allclose(by_keep, plain)
    # The mask token learns: it receives a gradient.
    model.forward_tokens(x, mask=mask).sum().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert "mask_token" in model.no_weight_decay()


def test_masking_errors():
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ConfigError, match="mask_token=True"):
        tiny_swin().forward_tokens(x, keep=torch.zeros(2, 3, dtype=torch.long))
    model = tiny_swin(mask_token=True)
    with pytest.raises(ShapeError, match=r"mask must have shape \(B=2, N=256\)"):
        model.forward_tokens(x, mask=torch.zeros(2, 64, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"keep indices must lie in \[0, 256\)"):
        model.forward_tokens(x, keep=torch.full((2, 3), 256))
    with pytest.raises(ConfigError, match="not both"):
        model.forward_tokens(x, keep=torch.zeros(2, 1, dtype=torch.long), mask=torch.zeros(2, 256, dtype=torch.bool))


# -- foreign checkpoints -----------------------------------------------------------------------------------
def test_original_layout_checkpoint_loads_into_the_same_model():
    from zir.models.weights import load_weights

    source = tiny_swin()
    x = torch.randn(1, 3, 32, 32)
    # The original code merges patches at the end of a stage and stores derived buffers; timm names the
    # head `head.fc`. Rewrite a zir state dict that way and load it back.
    original = {}
    for key, value in source.state_dict().items():
        if ".downsample." in key:
            parts = key.split(".")
            parts[1] = str(int(parts[1]) - 1)
            key = ".".join(parts)
        original[key.replace("head.", "head.fc.") if key.startswith("head.") else key] = value
    original["layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    target = tiny_swin()
    torch.manual_seed(5)
    target.init_weights()
    with pytest.warns(UserWarning, match="original Swin layout"):
        load_weights(target, {"model": original})
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_small_window_bias_tables_are_placed_inside_the_full_table():
    # Code that shrinks the last stage's window to its 2x2 grid stores a 3x3-offset table (9 rows).
    from zir.models.weights import load_weights

    source = tiny_swin(img_size=16)  # stage grids 8, 4, 2: the last stage is one 2x2 window
    state = source.state_dict()
    # Full-table rows of the offsets -1..1, in row-major offset order (the row index grows with the offset).
    rows = torch.sort(relative_position_index((2, 2), (4, 4)).reshape(-1).unique()).values
    for block in (0, 1):
        key = f"layers.2.blocks.{block}.attn.relative_position_bias_table"
        state[key] = state[key][rows]
    target = tiny_swin(img_size=16)
    load_weights(target, state)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(target(x), source(x), atol=1e-6)
