"""Dense features: a linear segmentation probe on frozen patch tokens, upsampled to pixels (DINOv2's linear
protocol), scored by mean intersection-over-union.

The tower's patch tokens form a (D, rows, cols) map per image. The probe is one linear map D -> classes
applied to every token (a 1x1 convolution) on standardised features; its logits are upsampled bilinearly to
the mask's pixels and trained with cross-entropy against the per-pixel classes, each class weighted by its
pixel share ** -1/2 (`class_weights`): the background is 87-97% of shapes' pixels, and unweighted, the probe
predicted background everywhere on the features of small towers. The tower never changes.

    evaluate_segmentation(train_maps, train_masks, test_maps, test_masks, classes) -> {"mIoU", "pixel_acc", "iou"}
    evaluate_segmentation(..., keep=4)   also "predictions": the first 4 test images' predicted masks
    evaluate_objectness(train_maps, train_masks, test_maps, test_masks) -> {"object_mIoU", "object_IoU", ...}

`evaluate_objectness` is the shape-agnostic probe: the same protocol with two classes, any object against the
background, so a tower whose patch tokens know where an object is but not which shape it is still scores (on
shapes the per-class probe asks the shape, which only captions teach at CPU scale; docs/adapt.md).

mIoU is in percent (as zir's accuracies are): the mean over classes of TP / (TP + FP + FN) on the test pixels,
over the classes that occur in the truth or the prediction; the background is a class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECT_CLASSES = ("background", "object")
EPOCHS = 30
BATCH = 64
LR = 1e-2
WEIGHT_DECAY = 1e-4


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel standardisation of (N, D, h, w) maps with the training maps' statistics."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def upsampled_logits(weight: torch.Tensor, bias: torch.Tensor, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) logits of the linear probe (C, D), (C,) on (N, D, h, w) maps, bilinear up to `size`."""
    logits = torch.einsum("cd,ndhw->nchw", weight, maps) + bias[None, :, None, None]
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def class_weights(masks: torch.Tensor, num_classes: int, power: float = 0.5) -> torch.Tensor:
    """Loss weight per class, (pixel share) ** -power scaled to mean 1 (classes absent from `masks`: 0)."""
    share = torch.bincount(masks.reshape(-1), minlength=num_classes).double() / masks.numel()
    w = torch.where(share > 0, share.clamp_min(1e-12) ** -power, torch.zeros_like(share))
    return (w / w[share > 0].mean()).float()


def fit_segmentation_probe(maps: torch.Tensor, masks: torch.Tensor, num_classes: int, epochs: int = EPOCHS,
                           lr: float = LR, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,)) of a linear probe fitted on standardised maps (N, D, h, w) to masks (N, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.zeros(num_classes, maps.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=WEIGHT_DECAY)
    steps = epochs * max(1, -(-len(maps) // BATCH))
    weights = class_weights(masks, num_classes)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    size = tuple(masks.shape[-2:])
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(maps), generator=gen).split(BATCH):
                loss = F.cross_entropy(upsampled_logits(weight, bias, maps[idx], size), masks[idx], weight=weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return weight.detach(), bias.detach()


def confusion(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) pixel counts, rows the true class and columns the predicted one."""
    flat = truth.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> tuple[float, list[float | None], float]:
    """(mIoU %, IoU % per class (None where the class is in neither), pixel accuracy %)."""
    conf = confusion(pred, truth, num_classes).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    ious = [float(100.0 * t / u) if u > 0 else None for t, u in zip(tp, union)]
    present = [v for v in ious if v is not None]
    return sum(present) / max(len(present), 1), ious, float(100.0 * tp.sum() / conf.sum().clamp_min(1))


def evaluate_segmentation(train_maps: torch.Tensor, train_masks: torch.Tensor, test_maps: torch.Tensor,
                          test_masks: torch.Tensor, classes: tuple[str, ...], seed: int = 0, keep: int = 0) -> dict:
    """Fit the probe on the training maps and masks, score it on the test ones: mIoU, pixel accuracy, IoU per class
    (and with `keep` > 0, "predictions": the (keep, H, W) predicted classes of the first test images)."""
    train_maps, test_maps = _standardise(train_maps.float(), test_maps.float())
    weight, bias = fit_segmentation_probe(train_maps, train_masks, len(classes), seed=seed)
    with torch.no_grad():
        pred = torch.cat([upsampled_logits(weight, bias, part, tuple(test_masks.shape[-2:])).argmax(1)
                          for part in test_maps.split(256)])
    miou, ious, acc = mean_iou(pred, test_masks, len(classes))
    out = {"mIoU": miou, "pixel_acc": acc,
           "iou": {name: (round(v, 2) if v is not None else None) for name, v in zip(classes, ious)}}
    if keep > 0:
        out["predictions"] = pred[:keep]
    return out


def evaluate_objectness(train_maps: torch.Tensor, train_masks: torch.Tensor, test_maps: torch.Tensor,
                        test_masks: torch.Tensor, seed: int = 0) -> dict:
    """The probe fitted to object (any class > 0) against background: {"object_mIoU": mean of the two IoUs,
    "object_IoU": the object class's IoU, "object_pixel_acc"}, flat so `--baseline` keeps them beside mIoU."""
    res = evaluate_segmentation(train_maps, (train_masks > 0).long(), test_maps, (test_masks > 0).long(),
                                OBJECT_CLASSES, seed=seed)
    return {"object_mIoU": res["mIoU"], "object_IoU": res["iou"]["object"], "object_pixel_acc": res["pixel_acc"]}
