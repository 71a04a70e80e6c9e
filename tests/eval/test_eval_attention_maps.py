"""Attention maps and PCA pictures: shapes, sums, and known answers."""

import pytest
import torch

from helpers import random_images, tiny_vit
from zir.errors import ShapeError
from zir.eval.attention_maps import attention_rollout, cls_attention, patch_pca, rollout


def test_cls_attention_is_the_cls_row_of_the_last_block():
    tower = tiny_vit(num_classes=0, reg_tokens=2)
    images = random_images(h=32, w=48)
    maps = cls_attention(tower, images)
    assert maps.shape == (2, 2, 8, 12)
    _, weights = tower.eval().forward_with_attention(images)
    last = weights[-1]
    torch.testing.assert_close(maps.flatten(2), last[:, :, 0, 3:])
    # the maps plus what CLS gives to the prefix tokens (itself, two registers) sum to one
    torch.testing.assert_close(maps.flatten(2).sum(-1) + last[:, :, 0, :3].sum(-1), torch.ones(2, 2))


def test_cls_attention_needs_a_class_token():
    with pytest.raises(ShapeError, match="class token"):
        cls_attention(tiny_vit(num_classes=0, class_token=False, global_pool="avg"), random_images())


def test_rollout_of_uniform_attention_is_uniform_and_of_identity_is_identity():
    T = 5
    uniform = [torch.full((1, 2, T, T), 1.0 / T) for _ in range(3)]
    torch.testing.assert_close(rollout(uniform, residual=0.0), torch.full((1, T, T), 1.0 / T))
    identity = [torch.eye(T).expand(1, 2, T, T) for _ in range(3)]
    torch.testing.assert_close(rollout(identity), torch.eye(T)[None])
    # two blocks multiply in order: later blocks on the left
    a = torch.softmax(torch.randn(1, 1, T, T), -1)
    b = torch.softmax(torch.randn(1, 1, T, T), -1)
    torch.testing.assert_close(rollout([a, b], residual=0.0), b[:, 0] @ a[:, 0])


def test_attention_rollout_is_a_distribution_over_patches():
    tower = tiny_vit(num_classes=0).train()  # in training mode, to see that the mode comes back
    maps = attention_rollout(tower, random_images())
    assert maps.shape == (2, 8, 8)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(2))
    assert torch.all(maps >= 0)
    assert tower.training  # the caller's mode is restored


def test_patch_pca_is_scaled_and_separates_different_patches():
    tower = tiny_vit(num_classes=0)
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, :16] = 1.0  # top half bright, bottom half dark
    colours = patch_pca(tower, images)
    assert colours.shape == (2, 8, 8, 3)
    assert colours.min() >= 0 and colours.max() <= 1
    first = colours[..., 0]
    # the first component tells the bright half from the dark half
    top, bottom = first[:, 1:3].mean(), first[:, 5:7].mean()
    assert abs(top - bottom) > 0.5
