"""The convolutional stem (Xiao et al. 2021): same token grid as the patch embedding, overlapping receptive fields."""

import pytest
import torch

import zir
from zir.errors import ConfigError, ShapeError
from zir.nn.conv_stem import ConvStem


def test_stem_makes_the_patch_grid_with_one_strided_conv_per_halving():
    stem = ConvStem(img_size=64, patch_size=8, embed_dim=128)
    strided = [m for m in stem.proj if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # 8 = 2 ** 3
    assert [m.out_channels for m in strided] == [16, 32, 64]  # doubling up to D / 2, then a 1x1 to D
    out = stem(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 64, 128) and stem.grid_size == (8, 8) and stem.num_patches == 64
    assert stem(torch.randn(1, 3, 32, 48)).shape == (1, 4 * 6, 128)  # any size the patch divides


def test_tokens_see_their_neighbours_but_nothing_further():
    """Unlike patchify, a conv-stem token depends on pixels just outside its patch, and only those."""
    torch.manual_seed(0)
    stem = ConvStem(img_size=32, patch_size=4, embed_dim=32).eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[0, :, 13, 13] += 5.0  # a pixel of patch (3, 3); token j sees pixels 4j - 3 .. 4j + 3 through two 3x3/2 convs
    changed = (stem(x) - stem(y)).abs().amax(-1).view(8, 8) > 1e-6
    assert changed[3, 3] and changed[4, 4]  # its own patch and the next one, whose field reaches back 3 pixels
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert set(rows.tolist()) == {3, 4} and set(cols.tolist()) == {3, 4}


def test_dropped_and_masked_patches_do_not_show_through_the_stem():
    """MAE/FLIP (`keep`) and iBOT (mask token): the visible tokens are the same whatever the hidden pixels hold."""
    torch.manual_seed(0)
    tower = zir.create_model("vit_nano_convstem_patch4_32", num_classes=0, mask_token=True).eval()
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 9, 18, 27], [63, 54, 45, 36]])  # a diagonal of patches per image
    hidden = torch.ones(2, 64, dtype=torch.bool)
    hidden[torch.arange(2)[:, None], keep] = False
    y = x.clone()
    pixels = hidden.view(2, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3).expand_as(y)
    y[pixels] = torch.randn(int(pixels.sum()))  # change every hidden pixel, none of the visible ones
    torch.testing.assert_close(tower.forward_tokens(y, keep), tower.forward_tokens(x, keep))
    torch.testing.assert_close(tower.forward_tokens(y, mask=hidden), tower.forward_tokens(x, mask=hidden))
    assert not torch.allclose(tower.forward_tokens(y), tower.forward_tokens(x))  # without a mask they do differ
    with pytest.raises(ShapeError, match="hidden mask of shape"):
        tower.patch_embed(x, hidden[:, :10])


@pytest.mark.parametrize("patch", [6, (4, 8), 1])
def test_patch_sizes_the_stem_cannot_make_are_config_errors(patch):
    with pytest.raises(ConfigError, match="power-of-two patch size"):
        ConvStem(img_size=48, patch_size=patch, embed_dim=32)


def test_unknown_stem_names_the_choices():
    with pytest.raises(ConfigError, match="stem must be one of patch, conv; got 'resnet'"):
        zir.create_model("vit_nano_patch4_32", stem="resnet")


def test_conv_stem_tower_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = zir.create_model("vit_nano_convstem_patch4_32", num_classes=5)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # moves the BatchNorm running statistics off their initial values
    model.eval()
    path = zir.save_weights(model, tmp_path / "w.safetensors")
    again = zir.create_model("vit_nano_convstem_patch4_32", num_classes=5, weights=path).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x), atol=1e-6, rtol=1e-6)


def test_patch_weights_do_not_load_into_a_conv_stem():
    plain = zir.create_model("vit_nano_patch4_32", num_classes=5)
    with pytest.raises(Exception, match="patch_embed.proj"):
        zir.create_model("vit_nano_convstem_patch4_32", num_classes=5, weights=plain.state_dict())
