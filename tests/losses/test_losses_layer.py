"""The pure losses in zir.losses: the same numbers as before they left the objectives, and each paper's definition.

RECORDED holds what the functions returned, on the seeded inputs of `seeded_losses()`, when they still lived in
the objective modules (commit a9a0740, CPU float32); the move changed no operation, so the values must agree to
float32 rounding. The `test_*_by_hand` cases check each loss against its paper's formula on inputs small
enough to compute on paper.
"""

from __future__ import annotations

import math

import pytest
import torch

import zir.losses
from zir.errors import ConfigError
from zir.losses.coca import caption_loss
from zir.losses.dino import dino_loss, entropy, teacher_probs, update_center
from zir.losses.ibot import ibot_patch_loss
from zir.losses.koleo import koleo_loss
from zir.losses.mae import masked_mse, normalize_patches
from zir.losses.simclr import nt_xent
from zir.losses.simmim import masked_l1
from zir.objectives.simmim import pixel_mask

RECORDED = {
    "nt_xent": 3.507803201675415,
    "nt_xent_acc": 0.0,
    "dino_loss": 13.465856552124023,
    "teacher_probs": [
        0.0037611699663102627, 0.3219660818576813, 0.02509366348385811, 0.3153837323188782, 0.32961463928222656,
        0.00418078200891614, 0.7348567843437195, 0.09619038552045822, 0.030405405908823013, 0.12101384997367859,
        0.008794349618256092, 0.008739178068935871, 0.9975963234901428, 0.0008431836613453925,
        0.00023848841374274343, 0.0004020554188173264, 0.0007942558731883764, 0.0001256558607565239],
    "entropy": 0.7159200310707092,
    "update_center": [0.06899835914373398, -0.1642710566520691, 0.17207129299640656, 0.02481774054467678,
                      0.04943101108074188, 0.34331953525543213],
    "ibot_patch_loss": 9.723196029663086,
    "koleo_loss": 0.25014013051986694,
    "normalize_patches": [
        -1.1063951253890991, 1.3002045154571533, -0.2793511748313904, 0.08554161339998245, 0.45215755701065063,
        0.1817033737897873, -1.4486650228500366, 0.814803957939148, -1.1753138303756714, 0.02560689114034176,
        1.2666141986846924, -0.11690714955329895, -0.5982775688171387, 0.2966609299182892, 1.270756721496582,
        -0.9691399335861206, 1.0675965547561646, -1.08230459690094, -0.57947838306427, 0.594186544418335,
        1.4733203649520874, -0.23253169655799866, -0.5680650472640991, -0.6727235913276672],
    "masked_mse": 2.5608935356140137,
    "masked_l1": 1.1707056760787964,
    "caption_loss": 2.930438756942749,
}


def seeded_losses() -> dict[str, torch.Tensor]:
    """Every moved loss (and DINO's parts) on small float32 inputs drawn from fixed seeds."""
    r = {}
    torch.manual_seed(0)
    r["nt_xent"], r["nt_xent_acc"] = nt_xent(torch.randn(4, 8), torch.randn(4, 8), 0.2)
    torch.manual_seed(1)
    s = [torch.randn(3, 6) for _ in range(3)]
    t = [torch.randn(3, 6) for _ in range(2)]
    c = 0.1 * torch.randn(1, 6)
    r["dino_loss"] = dino_loss(s, t, c, 0.1, 0.04)
    r["teacher_probs"] = teacher_probs(t[0], c, 0.5)
    r["entropy"] = entropy(r["teacher_probs"])
    center = c.clone()
    update_center(center, torch.cat(t), 0.9)
    r["update_center"] = center
    torch.manual_seed(2)
    s, t = torch.randn(3, 5, 6), torch.randn(3, 5, 6)
    mask = torch.rand(3, 5) < 0.5
    mask[2] = False  # an image with nothing hidden counts for nothing
    r["ibot_patch_loss"] = ibot_patch_loss(s, t, mask, 0.1 * torch.randn(1, 1, 6), 0.1, 0.04)
    torch.manual_seed(3)
    r["koleo_loss"] = koleo_loss(torch.randn(5, 4))
    torch.manual_seed(4)
    r["normalize_patches"] = normalize_patches(torch.randn(2, 3, 4))
    r["masked_mse"] = masked_mse(torch.randn(2, 3, 4), r["normalize_patches"], torch.rand(2, 3) < 0.5)
    torch.manual_seed(5)
    pred, images, mask = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.rand(2, 4) < 0.5
    r["masked_l1"] = masked_l1(pred, images, pixel_mask(mask, (2, 2), 2))
    torch.manual_seed(6)
    r["caption_loss"] = caption_loss(torch.randn(2, 5, 7), torch.tensor([[1, 4, 5, 2, 0], [1, 3, 2, 0, 0]]), 0)
    return r


@pytest.fixture(scope="module")
def computed() -> dict[str, torch.Tensor]:
    return seeded_losses()


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_values_equal_those_recorded_before_the_move(computed, name):
    got = computed[name]
    want = torch.tensor(RECORDED[name], dtype=torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.flatten() if want.ndim else got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("module, names", [
    ("simclr", ["nt_xent"]),
    ("dino", ["dino_loss", "teacher_probs", "entropy", "update_center"]),
    ("ibot", ["ibot_patch_loss"]),
    ("koleo", ["koleo_loss"]),
    ("mae", ["masked_mse", "normalize_patches"]),
    ("simmim", ["masked_l1"]),
])
def test_objective_modules_still_export_the_moved_names(module, names):
    import importlib

    objective = importlib.import_module(f"zir.objectives.{module}")
    for name in names:
        assert getattr(objective, name) is getattr(zir.losses, name)


def test_nt_xent_by_hand():
    # SimCLR Alg. 1 on two identical, orthogonal pairs: each anchor has its partner at similarity 1 and two
    # negatives at 0, so every l(i, j) = -log(e^(1/tau) / (e^(1/tau) + 2)) = log(1 + 2 e^(-1/tau)).
    z = torch.eye(2)
    for tau in (1.0, 0.5):
        loss, acc = nt_xent(z, z.clone(), tau)
        assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), rel=1e-6)
        assert acc.item() == 1.0


def test_dino_by_hand():
    ln3 = math.log(3)
    # centring and sharpening: softmax((t - c) / tau)
    t = torch.tensor([[0.0, ln3]])
    torch.testing.assert_close(teacher_probs(t, torch.zeros(1, 2), 1.0), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(teacher_probs(t, torch.zeros(1, 2), 0.5), torch.tensor([[0.1, 0.9]]))
    torch.testing.assert_close(teacher_probs(t, t, 0.04), torch.tensor([[0.5, 0.5]]))
    assert entropy(torch.tensor([[0.25, 0.75]])).item() == pytest.approx(math.log(4) - 0.75 * ln3, rel=1e-6)
    # H(t, s) averaged over (teacher global q, student crop v != q): two globals and one local
    teachers = [torch.tensor([[0.0, ln3]]), torch.tensor([[0.0, 0.0]])]  # p = (1/4, 3/4), (1/2, 1/2)
    students = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, ln3]]), torch.tensor([[ln3, 0.0]])]
    p = [(0.25, 0.75), (0.5, 0.5)]
    logq = [(math.log(0.5), math.log(0.5)), (math.log(0.25), math.log(0.75)), (math.log(0.75), math.log(0.25))]
    h = [[-(p[q][0] * logq[v][0] + p[q][1] * logq[v][1]) for v in range(3)] for q in range(2)]
    want = (h[0][1] + h[0][2] + h[1][0] + h[1][2]) / 4  # the same crop on both sides gives no signal
    assert dino_loss(students, teachers, torch.zeros(1, 2), 1.0, 1.0).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ConfigError, match="two crops"):
        dino_loss(students[:1], teachers[:1], torch.zeros(1, 2), 1.0, 1.0)
    # C <- m C + (1 - m) mean(t)
    center = torch.zeros(1, 2)
    update_center(center, torch.tensor([[2.0, 4.0], [4.0, 6.0]]), 0.9)
    torch.testing.assert_close(center, torch.tensor([[0.3, 0.5]]))


def test_ibot_patch_loss_by_hand():
    # A uniform teacher over 2 prototypes; only hidden patches count, averaged within each image, then over
    # the images that hide any. Visible patches carry a cross-entropy of about 40, which must not show.
    far = [20.0, -20.0]
    student = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)], far],
                            [[0.0, 0.0], far, far],
                            [far, far, far]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    image0 = (math.log(2) + 0.5 * math.log(16 / 3)) / 2  # -(1/2 log 1/4 + 1/2 log 3/4) = 1/2 log(16/3)
    want = (image0 + math.log(2)) / 2
    got = ibot_patch_loss(student, torch.zeros(3, 3, 2), mask, torch.zeros(1, 1, 2), 1.0, 1.0)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_koleo_by_hand():
    # Points on the unit circle at 0, 60 and 180 degrees (given at other lengths: KoLeo normalises them):
    # nearest-neighbour distances 1, 1 and sqrt(3), so the loss is -(log 1 + log 1 + log sqrt 3) / 3.
    x = torch.tensor([[2.0, 0.0], [2.5, 2.5 * math.sqrt(3)], [-0.5, 0.0]])
    assert koleo_loss(x, eps=0.0).item() == pytest.approx(-math.log(3) / 6, abs=1e-6)


def test_masked_mse_by_hand():
    # Per-patch MSE 1, 100, 2; the middle patch is visible, so only (1 + 2) / 2 counts.
    pred = torch.tensor([[[1.0, 1.0], [10.0, 10.0], [0.0, 2.0]]])
    mask = torch.tensor([[True, False, True]])
    assert masked_mse(pred, torch.zeros(1, 3, 2), mask).item() == pytest.approx(1.5, rel=1e-6)
    # per-patch normalisation with the unbiased variance: [1, 2, 3, 4] has mean 2.5 and variance 5/3
    got = normalize_patches(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
    want = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(5 / 3 + 1e-6)
    torch.testing.assert_close(got.flatten(), want)


def test_masked_l1_by_hand():
    # One hidden pixel with errors 1, 2, 3 over the channels: (1 + 2 + 3) / (1 pixel x 3 channels); the
    # visible pixels' errors of 50 do not count.
    pred = torch.full((1, 3, 2, 2), 50.0)
    pred[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    mask = torch.zeros(1, 1, 2, 2)
    mask[0, 0, 0, 0] = 1.0
    assert masked_l1(pred, torch.zeros(1, 3, 2, 2), mask).item() == pytest.approx(2.0, rel=1e-6)


def test_caption_loss_by_hand():
    # -log P(y_t | y_<t, x) averaged over the real target tokens; a padded target (id 0 here) would add
    # about 40, and the last position predicts nothing.
    ln3, far = math.log(3), [-20.0, 20.0]
    logits = torch.tensor([[[0.0, ln3], far, far], [[0.0, 0.0], [0.0, ln3], far]])
    ids = torch.tensor([[1, 1, 0], [1, 1, 1]])
    want = (math.log(4 / 3) + math.log(2) + math.log(4 / 3)) / 3
    assert caption_loss(logits, ids, pad_id=0).item() == pytest.approx(want, rel=1e-6)
