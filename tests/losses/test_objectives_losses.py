"""Each objective's loss against a written-out reference on small random tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from zir.objectives.dino import DINOHead, dino_loss, teacher_probs, teacher_temp_at, update_center
from zir.objectives.ibot import ibot_patch_loss
from zir.objectives.koleo import koleo_loss
from zir.objectives.mae import masked_mse, normalize_patches, patchify, unpatchify
from zir.objectives.simclr import nt_xent


def reference_nt_xent(z1, z2, t):
    """SimCLR's NT-Xent written as the paper's explicit sum over the 2B anchors."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n, b = len(z), z1.shape[0]
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(num / den)
    return total / n


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_matches_explicit_loop(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    loss, acc = nt_xent(z1, z2, t)
    assert loss.item() == pytest.approx(reference_nt_xent(z1.double(), z2.double(), t), rel=1e-5)
    assert 0.0 <= float(acc) <= 1.0


def test_nt_xent_is_symmetric_and_rewards_matching_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 16, generator=g)
    a, _ = nt_xent(z, z + 0.01 * torch.randn(8, 16, generator=g), 0.1)
    b, _ = nt_xent(z, torch.randn(8, 16, generator=g), 0.1)
    assert a < b
    x, y = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert nt_xent(x, y, 0.2)[0].item() == pytest.approx(nt_xent(y, x, 0.2)[0].item(), rel=1e-6)


def test_dino_centring_and_sharpening_follow_the_published_formula():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(3, 6, generator=g) for _ in range(4)]  # 2 globals + 2 locals
    t = [torch.randn(3, 6, generator=g) for _ in range(2)]
    c = torch.randn(1, 6, generator=g)
    ts, tt = 0.1, 0.04
    total, n = 0.0, 0
    for q in range(2):
        for v in range(4):
            if q == v:
                continue
            for b in range(3):
                p = [math.exp((t[q][b, k] - c[0, k]) / tt) for k in range(6)]
                p = [x / sum(p) for x in p]
                z = sum(math.exp(s[v][b, k] / ts) for k in range(6))
                total += -sum(p[k] * math.log(math.exp(s[v][b, k] / ts) / z) for k in range(6)) / 3
            n += 1
    assert dino_loss(s, t, c, ts, tt).item() == pytest.approx(total / n, rel=1e-4)
    probs = teacher_probs(t[0], c, tt)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    # centre: c <- m c + (1 - m) mean(t)
    c0 = c.clone()
    update_center(c, torch.cat(t), 0.9)
    assert torch.allclose(c, 0.9 * c0 + 0.1 * torch.cat(t).mean(0, keepdim=True), atol=1e-6)


def test_teacher_temperature_warmup_is_linear_then_constant():
    assert teacher_temp_at(0, 100, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temp_at(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temp_at(30, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temp_at(99, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)


def test_dino_head_last_layer_is_weight_normalised():
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.v.mul_(5.0)  # the scale of v must not matter
    x = torch.randn(4, 16)
    logits = head(x)
    assert logits.shape == (4, 32) and logits.abs().max() <= 1.0 + 1e-5  # cosines: unit prototypes, unit input
    assert not head.last_layer.g.requires_grad


def test_mae_loss_ignores_visible_patches_and_sees_masked_ones():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 8, 8, generator=g)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    assert torch.equal(unpatchify(patches, 4, (2, 2)), images)
    pred = torch.randn(2, 4, 48, generator=g)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    target = normalize_patches(patches)
    ref = sum(((pred[b, n] - target[b, n]) ** 2).mean() for b in range(2) for n in range(4) if mask[b, n]) / 4
    loss = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    changed = pred.clone()
    changed[0, 1] += 10.0  # a visible patch: no change
    assert masked_mse(changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    changed = pred.clone()
    changed[0, 0] += 1.0  # a hidden patch: the loss changes
    assert masked_mse(changed, target, mask).item() != pytest.approx(loss.item(), rel=1e-6)
    # normalised targets: zero mean, unit (unbiased) variance per patch
    assert torch.allclose(target.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 4), atol=1e-3)


def test_ibot_patch_loss_averages_hidden_patches_per_image():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    c = torch.randn(1, 1, 5, generator=g)
    mask = torch.tensor([[True, True, False], [False, False, False]])  # image 1 has no hidden patch
    p = torch.softmax((t - c) / 0.04, -1)
    ce = -(p * torch.log_softmax(s / 0.1, -1)).sum(-1)
    ref = (ce[0, 0] + ce[0, 1]) / 2  # only image 0 counts
    assert ibot_patch_loss(s, t, mask, c, 0.1, 0.04).item() == pytest.approx(ref.item(), rel=1e-5)


def test_koleo_is_minus_log_nearest_neighbour_distance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    z = F.normalize(x, dim=-1)
    ref = 0.0
    for i in range(6):
        d = min(float((z[i] - z[j]).norm()) for j in range(6) if j != i)
        ref += -math.log(d + 1e-8)
    assert koleo_loss(x).item() == pytest.approx(ref / 6, rel=1e-5)


def test_mae_reconstruct_keeps_visible_patches_and_fills_hidden_ones():
    from zir.data.masking import random_mask
    from zir.models import create_model
    from zir.objectives import MAE

    torch.manual_seed(0)
    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    mae = MAE(towers)
    images = torch.randn(2, 3, 32, 32)
    m = random_mask(2, (8, 8), 0.75, seed=0)
    out = mae.reconstruct(images, m.keep)
    assert out.shape == images.shape
    got, want = patchify(out, 4), patchify(images, 4)
    visible = ~m.mask
    assert torch.allclose(got[visible], want[visible])
    assert not torch.allclose(got[m.mask], want[m.mask])


def test_dino_last_layer_gets_no_gradient_while_frozen():
    from zir.models import create_model
    from zir.objectives import DINO

    towers = {"image": create_model("vit_nano_patch4_32", num_classes=0)}
    dino = DINO(towers, out_dim=16, freeze_last_layer=0.1)
    x = torch.randn(3, 64)
    dino.head(x).sum().backward()
    assert dino.head.last_layer.v.grad is None and dino.head.mlp[0].weight.grad is not None
    dino.after_step(8, 100)  # step 9 of 100: still frozen
    assert dino.head.last_layer.frozen
    dino.after_step(9, 100)
    assert not dino.head.last_layer.frozen
    dino.head(x).sum().backward()
    assert dino.head.last_layer.v.grad is not None
