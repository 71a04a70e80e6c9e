"""Batched seeded augmentation, the method pipelines, normalisation, and the MAE / BEiT masks with `keep`."""

import pytest
import torch

from zir.data import masking as M
from zir.data import transforms as T
from zir.errors import ConfigError, ShapeError, UnknownNameError


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    x[1] = x[0]  # two identical images: they must still get different augmentations
    return x


def test_augment_shape_range_and_determinism(images):
    aug = T.pipeline("simclr", 24)["global"][0]
    a = aug(images, seed=1)
    assert a.shape == (8, 3, 24, 24) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, aug(images, seed=1))
    assert not torch.equal(a, aug(images, seed=2))
    assert not torch.allclose(a[0], a[1])  # parameters are drawn per image


def test_augment_leaves_the_global_random_state_alone(images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    T.pipeline("dino", 32)["global"][0](images, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_single_operations_do_what_they_say():
    x = torch.linspace(0, 1, 3 * 8 * 8).view(1, 3, 8, 8).repeat(4, 1, 1, 1)
    flipped = T.Augment(8, crop=False, flip=1.0)(x, seed=0)
    assert torch.allclose(flipped, x.flip(-1))
    gray = T.Augment(8, crop=False, flip=0.0, gray_p=1.0)(x, seed=0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    sol = T.Augment(8, crop=False, flip=0.0, solarize_p=1.0)(x, seed=0)
    assert torch.allclose(sol, torch.where(x >= 0.5, 1 - x, x), atol=1e-6)
    resized = T.Augment(4, crop=False, flip=0.0)(x, seed=0)
    assert resized.shape == (4, 3, 4, 4)


def test_pipelines_follow_published_defaults_scaled_to_size():
    simclr = T.pipeline("simclr", 224)["global"][0]
    assert simclr.scale == (0.08, 1.0) and simclr.jitter == (0.8, 0.8, 0.8, 0.2) and simclr.blur_p == 0.5
    assert simclr.blur_sigma == pytest.approx((0.1, 2.0))
    assert T.pipeline("simclr", 32)["global"][0].blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    dino = T.pipeline("dino", 224, patch_size=16)
    g1, g2 = dino["global"]
    (local,) = dino["local"]
    assert (g1.blur_p, g2.blur_p, g2.solarize_p, local.blur_p) == (1.0, 0.1, 0.2, 0.5)
    assert g1.scale == (0.4, 1.0) and local.scale == (0.05, 0.4) and local.size == 96
    assert T.local_size_for(32, 4) == 12 and T.local_size_for(64, 8) == 24
    byol = T.pipeline("byol", 64)["global"]
    assert (byol[0].blur_p, byol[1].blur_p, byol[1].solarize_p) == (1.0, 0.1, 0.2)
    assert T.pipeline("mae", 32)["global"][0].jitter_p == 0
    with pytest.raises(UnknownNameError, match="pipeline 'moco'"):
        T.pipeline("moco", 32)


def test_dino_local_crops_have_the_local_size(images):
    local = T.pipeline("dino", 32, patch_size=4)["local"][0]
    assert local(images, seed=0).shape == (8, 3, 12, 12)


def test_bad_augment_arguments():
    with pytest.raises(ConfigError, match="scale"):
        T.Augment(32, scale=(0.5, 0.2))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)"):
        T.Augment(32)(torch.rand(3, 32, 32), seed=0)


def test_normalize_round_trip_and_to_float():
    x = torch.rand(2, 3, 5, 5)
    n = T.normalize(x, T.CIFAR10_MEAN, T.CIFAR10_STD)
    assert torch.allclose(n.mean(dim=(0, 2, 3)), ((x.mean(dim=(0, 2, 3)) - torch.tensor(T.CIFAR10_MEAN)) / torch.tensor(T.CIFAR10_STD)), atol=1e-5)
    assert torch.allclose(T.denormalize(n, T.CIFAR10_MEAN, T.CIFAR10_STD), x, atol=1e-6)
    u = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    f = T.to_float(u)
    assert f.shape == (2, 3, 4, 4) and float(f.max()) == 1.0


@pytest.mark.parametrize("kind", ["random", "block"])
@pytest.mark.parametrize("grid,ratio", [((8, 8), 0.75), ((14, 14), 0.4), ((4, 6), 0.5)])
def test_masks_hide_exactly_the_ratio_and_keep_is_sorted(kind, grid, ratio):
    m = M.make_mask(kind, 16, grid, ratio, seed=3)
    n = grid[0] * grid[1]
    hidden = round(ratio * n)
    assert m.keep.shape == (16, n - hidden) and m.keep.dtype == torch.long
    assert m.hidden.shape == (16, hidden) and m.mask.shape == (16, n) and m.mask.dtype == torch.bool
    assert (m.mask.sum(1) == hidden).all()
    assert (m.keep[:, 1:] > m.keep[:, :-1]).all() and (m.hidden[:, 1:] > m.hidden[:, :-1]).all()
    both = torch.cat([m.keep, m.hidden], 1).sort(1).values
    assert torch.equal(both, torch.arange(n).expand(16, n))
    assert not m.mask.gather(1, m.keep).any() and m.mask.gather(1, m.hidden).all()
    assert m.ratio == pytest.approx(hidden / n)
    assert torch.equal(m.keep, M.make_mask(kind, 16, grid, ratio, seed=3).keep)
    assert not torch.equal(m.keep, M.make_mask(kind, 16, grid, ratio, seed=4).keep)
    assert len({tuple(r) for r in m.keep.tolist()}) > 1  # each sample draws its own mask


def test_keep_gathers_the_visible_tokens_in_row_major_order():
    m = M.random_mask(4, (4, 4), 0.75, seed=0)
    tokens = torch.arange(16).float().view(1, 16, 1).expand(4, 16, 2)  # token value = its patch index
    picked = torch.gather(tokens, 1, m.keep.unsqueeze(-1).expand(-1, -1, 2))
    assert picked.shape == (4, 4, 2)
    for b in range(4):
        assert picked[b, :, 0].tolist() == torch.nonzero(~m.mask[b]).flatten().float().tolist()


def test_block_masks_are_made_of_blocks():
    def neighbour_rate(m):
        grid = m.mask.view(-1, 14, 14)
        right = grid[:, :, :-1] & grid[:, :, 1:]
        down = grid[:, :-1, :] & grid[:, 1:, :]
        return float(right.sum() + down.sum()) / float(grid.sum())

    block = neighbour_rate(M.block_mask(32, (14, 14), 0.4, seed=0))
    rand = neighbour_rate(M.random_mask(32, (14, 14), 0.4, seed=0))
    assert block > 1.2 and rand < 1.0  # hidden patches in blocks touch about two hidden neighbours


def test_mask_argument_errors():
    with pytest.raises(ConfigError, match="ratio 1.0"):
        M.random_mask(2, 4, 1.0)
    with pytest.raises(UnknownNameError, match="mask kind 'grid'"):
        M.make_mask("grid", 2, 4, 0.5)
    assert M.random_mask(3, 4, 0.0).keep.shape == (3, 16)
