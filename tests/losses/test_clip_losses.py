"""CLIP and SigLIP losses against written-out references, temperature clamping and errors."""

import math

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.losses import ClipLoss, SigLipLoss


def _features(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def _unit(v):
    return [x / math.sqrt(sum(y * y for y in v)) for x in v]


def _reference_clip(img, txt, scale):
    """Symmetric cross-entropy written out with Python loops."""
    a, b = [_unit(r) for r in img.tolist()], [_unit(r) for r in txt.tolist()]
    n = len(a)
    sim = [[scale * sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)] for i in range(n)]
    i2t = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


def _reference_siglip(img, txt, t, bias):
    a, b = [_unit(r) for r in img.tolist()], [_unit(r) for r in txt.tolist()]
    n = len(a)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = math.exp(t) * sum(x * y for x, y in zip(a[i], b[j])) + bias
            total += math.log(1 + math.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / n


def test_clip_loss_matches_reference():
    img, txt = _features()
    loss = ClipLoss()
    assert loss.scale.item() == pytest.approx(1 / 0.07)
    assert loss(img, txt).item() == pytest.approx(_reference_clip(img, txt, 1 / 0.07), rel=1e-5)


def test_clip_loss_is_symmetric_and_rewards_matching_pairs():
    img, txt = _features()
    loss = ClipLoss()
    assert loss(img, txt).item() == pytest.approx(loss(txt, img).item(), rel=1e-6)
    assert loss(img, img + 0.01 * txt).item() < 0.1 < loss(img, txt).item()


def test_clip_temperature_is_learnable_and_clamped_at_100():
    img, txt = _features()
    loss = ClipLoss()
    loss(img, txt).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)
    assert loss.scale.item() == pytest.approx(100.0)
    assert loss(img, txt).item() == pytest.approx(_reference_clip(img, txt, 100.0), rel=1e-5)
    loss.clamp_()
    assert loss.logit_scale.item() == pytest.approx(math.log(100))
    fixed = ClipLoss(temperature=0.05, learn_temperature=False)
    assert not list(fixed.parameters()) and fixed.scale.item() == pytest.approx(20.0)


def test_siglip_loss_matches_reference():
    img, txt = _features(seed=1)
    loss = SigLipLoss()
    assert loss.logit_scale.item() == pytest.approx(math.log(10)) and loss.logit_bias.item() == -10
    assert loss(img, txt).item() == pytest.approx(_reference_siglip(img, txt, math.log(10), -10.0), rel=1e-5)
    with torch.no_grad():
        loss.logit_scale.fill_(2.5)
        loss.logit_bias.fill_(-1.5)
    assert loss(img, txt).item() == pytest.approx(_reference_siglip(img, txt, 2.5, -1.5), rel=1e-5)
    loss(img, txt).backward()
    assert loss.logit_scale.grad.abs() > 0 and loss.logit_bias.grad.abs() > 0


def test_losses_reject_mismatched_shapes_and_bad_temperature():
    img, txt = _features()
    with pytest.raises(ShapeError, match="both be"):
        ClipLoss()(img, txt[:3])
    with pytest.raises(ShapeError):
        SigLipLoss()(img[:, :4], txt)
    with pytest.raises(ConfigError, match="temperature"):
        ClipLoss(temperature=0.001)
