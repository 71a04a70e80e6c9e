"""Patch masks: random (MAE), block-wise (BEiT, iBOT) and I-JEPA's, as the `keep` indices the towers take.

Patches are numbered in row-major order over a (h, w) grid, as the ViT's patch embedding lays them out.
A mask hides `round(ratio * N)` of the N patches in every sample, so that `keep`, the sorted indices of
the visible patches, is a rectangular (B, K) long tensor with K = N - hidden; `mask` is (B, N) bool with
True where hidden; `hidden` lists the hidden indices (B, N - K), sorted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from zir.errors import ConfigError, UnknownNameError

MASK_KINDS = ("random", "block", "jepa_targets", "jepa_context")


@dataclass
class Mask:
    """A batch of patch masks: keep (B, K) long, hidden (B, N - K) long, mask (B, N) bool (True = hidden)."""

    keep: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int]

    @property
    def ratio(self) -> float:
        """Fraction of patches hidden."""
        n = self.mask.shape[1]
        return (n - self.keep.shape[1]) / n if n else 0.0

    def to(self, device) -> "Mask":
        """The same mask on another device."""
        return Mask(self.keep.to(device), self.hidden.to(device), self.mask.to(device), self.grid)


def _grid(grid) -> tuple[int, int]:
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if h < 1 or w < 1:
        raise ConfigError(f"mask grid {grid}: expected positive patch counts")
    return int(h), int(w)


def _n_hidden(n: int, ratio: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"mask ratio {ratio}: expected 0 <= ratio < 1")
    return min(n - 1, int(round(ratio * n)))  # at least one patch stays visible


def _from_bool(mask: torch.Tensor, grid) -> Mask:
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible (0) first, each group in index order
    k = int((~mask[0]).sum()) if mask.shape[0] else mask.shape[1]
    return Mask(keep=order[:, :k].contiguous(), hidden=order[:, k:].contiguous(), mask=mask, grid=grid)


def random_mask(batch: int, grid, ratio: float, seed: int = 0) -> Mask:
    """MAE masking: hide a uniformly random `ratio` of the patches of each sample."""
    h, w = _grid(grid)
    n = h * w
    hidden = _n_hidden(n, ratio)
    g = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    noise = torch.rand(batch, n, generator=g)
    rank = noise.argsort(dim=1).argsort(dim=1)  # each patch's rank in its sample's noise
    mask = rank >= n - hidden  # the `hidden` highest-noise patches are hidden
    return _from_bool(mask, (h, w))


def _block_one(rng: np.random.Generator, h: int, w: int, target: int, min_block: int, aspect: tuple[float, float]) -> np.ndarray:
    """BEiT's procedure for one sample: add random rectangles until `target` patches are hidden, then adjust."""
    mask = np.zeros((h, w), dtype=bool)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    count, stalls = 0, 0
    while count < target and stalls < 20:
        budget = target - count
        area = rng.uniform(min(min_block, budget), max(min(min_block, budget), budget))
        placed = 0
        for _ in range(10):
            a = math.exp(rng.uniform(log_lo, log_hi))
            bh = int(round(math.sqrt(area * a)))
            bw = int(round(math.sqrt(area / a)))
            if 1 <= bh <= h and 1 <= bw <= w:
                top = rng.integers(0, h - bh + 1)
                left = rng.integers(0, w - bw + 1)
                new = bh * bw - mask[top : top + bh, left : left + bw].sum()
                if 0 < new <= budget:
                    mask[top : top + bh, left : left + bw] = True
                    placed = int(new)
                    break
        count += placed
        stalls = stalls + 1 if placed == 0 else 0
    flat = mask.reshape(-1)
    # make the count exact so that keep is rectangular: hide or reveal a few random patches
    if count < target:
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, target - count, replace=False)] = True
    elif count > target:
        taken = np.flatnonzero(flat)
        flat[rng.choice(taken, count - target, replace=False)] = False
    return flat


def block_mask(
    batch: int,
    grid,
    ratio: float,
    seed: int = 0,
    *,
    min_block: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> Mask:
    """BEiT/iBOT block-wise masking: rectangles of patches until `ratio` of them are hidden.

    `min_block` is the smallest rectangle area in patches: BEiT's 16 of 196, scaled to the grid by default.
    """
    h, w = _grid(grid)
    n = h * w
    target = _n_hidden(n, ratio)
    min_block = max(1, int(round(16 * n / 196))) if min_block is None else int(min_block)
    rng = np.random.default_rng(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    flat = np.stack([_block_one(rng, h, w, target, min_block, aspect) for _ in range(batch)]) if batch else np.zeros((0, n), bool)
    return _from_bool(torch.from_numpy(flat), (h, w))


def upsample_mask(mask: Mask, scale: int) -> Mask:
    """Each cell of a coarse mask becomes `scale` x `scale` patches: SimMIM's mask patches larger than the tower's.

    A (B, h * w) mask over mask patches -> a (B, h * s * w * s) mask over the tower's patches, still hiding
    the same count in every sample, so `keep` stays rectangular.
    """
    if scale < 1:
        raise ConfigError(f"mask upsampling scale {scale}: expected a whole number >= 1")
    if scale == 1:
        return mask
    h, w = mask.grid
    fine = mask.mask.reshape(-1, h, w).repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return _from_bool(fine.reshape(fine.shape[0], -1), (h * scale, w * scale))


def _exact(rng: np.random.Generator, flat: np.ndarray, target: int, fixed: np.ndarray | None = None) -> np.ndarray:
    """Hide or reveal random patches until exactly `target` are hidden; patches in `fixed` stay hidden."""
    count = int(flat.sum())
    if count < target:
        flat[rng.choice(np.flatnonzero(~flat), target - count, replace=False)] = True
    elif count > target:
        free = flat if fixed is None else flat & ~fixed
        flat[rng.choice(np.flatnonzero(free), count - target, replace=False)] = False
    return flat


def _rectangle(rng: np.random.Generator, h: int, w: int, area: float, aspect: tuple[float, float]) -> tuple[slice, slice]:
    """A random rectangle of about `area` patches with height/width in `aspect`, inside an h x w grid."""
    a = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    bh = min(h, max(1, int(round(math.sqrt(area * a)))))
    bw = min(w, max(1, int(round(math.sqrt(area / a)))))
    top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    return slice(top, top + bh), slice(left, left + bw)


PLACEMENTS = 10  # random placements tried per I-JEPA target block; the one overlapping the others least wins


def jepa_target_mask(batch: int, grid, ratio: float, seed: int = 0, blocks: int = 4,
                     aspect: tuple[float, float] = (0.75, 1.5)) -> Mask:
    """I-JEPA's targets: `blocks` rectangles of ratio / blocks of the patches each (aspect 0.75-1.5); their
    union is hidden, made exactly `ratio` of the patches so that `keep` is rectangular.

    Each block goes where it overlaps the blocks already placed least, of `PLACEMENTS` random places, so that
    the union reaches `ratio` with blocks rather than with the scattered patches that make up the count:
    measured on an 8x8 grid at ratio 0.4, 6% of the target patches are such fill, against 20% when blocks
    overlap freely (the paper's blocks may overlap, and its union varies in size instead)."""
    h, w = _grid(grid)
    n = h * w
    target = max(1, _n_hidden(n, ratio))
    rng = np.random.default_rng(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    rows = []
    for _ in range(batch):
        m = np.zeros((h, w), dtype=bool)
        for _ in range(blocks):
            places = []
            for _ in range(PLACEMENTS):
                place = _rectangle(rng, h, w, ratio * n / blocks, aspect)
                places.append((int(m[place].sum()), len(places), place))
                if places[-1][0] == 0:
                    break
            m[min(places)[2]] = True
        rows.append(_exact(rng, m.reshape(-1), target))
    flat = np.stack(rows) if rows else np.zeros((0, n), bool)
    return _from_bool(torch.from_numpy(flat), (h, w))


def jepa_context_mask(targets: Mask, ratio: float, seed: int = 0, scale: tuple[float, float] = (0.85, 1.0)) -> Mask:
    """I-JEPA's context: one large block (`scale` of the image) with every target patch removed from it.

    Hidden are the patches outside the block and all of `targets`' hidden patches; `ratio` (at least the
    targets' ratio) is the fraction hidden in every sample, reached by hiding or revealing non-target patches."""
    h, w = targets.grid
    n = h * w
    tmask = targets.mask.numpy()
    need = _n_hidden(n, ratio)
    if len(tmask) and need < int(tmask[0].sum()):
        raise ConfigError(f"jepa_context ratio={ratio}: expected at least the targets' ratio {targets.ratio:g}")
    rng = np.random.default_rng(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    rows = []
    for t in tmask:
        visible = np.zeros((h, w), dtype=bool)
        visible[_rectangle(rng, h, w, rng.uniform(*scale) * n, (1.0, 1.0))] = True
        hidden = ~visible.reshape(-1) | t
        rows.append(_exact(rng, hidden, need, fixed=t))
    flat = np.stack(rows) if rows else np.zeros((0, n), bool)
    return _from_bool(torch.from_numpy(flat), (h, w))


def make_mask(kind: str, batch: int, grid, ratio: float, seed: int = 0, blocks: int = 4) -> Mask:
    """A mask by kind name: 'random' (MAE), 'block' (BEiT/iBOT) or 'jepa_targets' (I-JEPA's target blocks);
    `jepa_context` depends on its targets and is made by `jepa_context_mask`."""
    if kind == "random":
        return random_mask(batch, grid, ratio, seed)
    if kind == "block":
        return block_mask(batch, grid, ratio, seed)
    if kind == "jepa_targets":
        return jepa_target_mask(batch, grid, ratio, seed, blocks)
    raise UnknownNameError(f"mask kind {kind!r}: expected random, block or jepa_targets")
