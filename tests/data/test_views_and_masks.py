"""Typed views and named masks: one parser of view names, several masks per view, I-JEPA's block masks."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import REPO

from zir.data import MaskSpec, View, ViewCollate, ViewPlan
from zir.data.masking import jepa_context_mask, jepa_target_mask, random_mask
from zir.data.plan import Item
from zir.errors import ConfigError
from zir.objectives import Forward


def items(n: int = 8, side: int = 32) -> list[Item]:
    g = torch.Generator().manual_seed(0)
    return [Item(str(i), torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8), 0, ["x"]) for i in range(n)]


def test_view_names_parse_once_into_typed_views():
    assert View.parse("global_1") == View("global", 1) and View.parse("image") == View("image")
    assert View.parse("text_2").modality == "text" and View("local", 3).name == "local_3"
    assert [View.parse(v).size_class for v in ("global_0", "image", "local_0", "text_0")] == ["full", "full", "local", "text"]
    for bad in ("global", "crop_0", "global_x", "image_1", 3):
        with pytest.raises(ConfigError, match="view"):
            View.parse(bad)
    assert Forward("image", "global_0") == Forward("image", View("global", 0))  # a name or a View: one forward
    assert not Forward("image", "image").masked and Forward("image", "image", "mae").masked


def test_no_module_but_views_py_reads_a_view_name_by_hand():
    by_hand = re.compile(r"""(startswith\(["'](global|local|text|audio)_|split\(["']_["']\)\[0\])""")
    found = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "src/zir").rglob("*.py") if p.name != "views.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if by_hand.search(line) and "task" not in line]  # eval splits task names (zeroshot_comp), not views
    assert found == []


def test_mask_specs_are_checked_with_one_line_errors():
    with pytest.raises(ConfigError, match="ratio=1.0: expected a fraction"):
        MaskSpec("mae", 1.0)
    with pytest.raises(ConfigError, match="generator='stripes'"):
        MaskSpec("mae", 0.5, "stripes")
    with pytest.raises(ConfigError, match="mask name 'my mask'"):
        MaskSpec("my mask", 0.5)
    with pytest.raises(ConfigError, match="names the target mask"):
        MaskSpec("context", 0.5, "jepa_context")
    with pytest.raises(ConfigError, match="target mask 'targets' is not on that view"):
        ViewPlan(masks={"global_0": (MaskSpec("context", 0.6, "jepa_context", outside="targets"),)})


def test_union_keeps_every_named_mask_and_refuses_one_name_with_two_settings():
    a = ViewPlan.from_dict({"global": 1, "masks": {"global_0": [MaskSpec("mae", 0.75)]}})
    b = ViewPlan.from_dict({"global": 2, "masks": {"global_0": [MaskSpec("flip", 0.5)], "global_1": [MaskSpec("flip", 0.5)]}})
    u = a.union(b)
    assert u.global_views == 2 and [m.name for m in u.masks["global_0"]] == ["mae", "flip"]
    assert u.mask_specs() == [("global_0", MaskSpec("mae", 0.75)), ("global_0", MaskSpec("flip", 0.5)),
                              ("global_1", MaskSpec("flip", 0.5))]
    assert a.union(a).masks == a.masks  # the same mask asked twice is one mask
    with pytest.raises(ConfigError, match=r"mask mae \(random, 0.75\) and mae \(block, 0.75\)"):
        a.union(ViewPlan.from_dict({"global": 1, "masks": {"global_0": [MaskSpec("mae", 0.75, "block")]}}))


def test_a_batch_holds_each_named_mask_with_its_own_ratio_and_draw():
    plan = ViewPlan(global_views=1, image=1, size=32, patch_size=4, masks={
        "image": (MaskSpec("mae", 0.75), MaskSpec("flip", 0.5)), "global_0": (MaskSpec("mask", 0.5, "block"),)})
    batch = ViewCollate(plan)(items())
    assert sorted(batch.masks) == [("global_0", "mask"), ("image", "flip"), ("image", "mae")]
    assert batch.mask("image", "mae").keep.shape == (8, 16) and batch.mask("image", "flip").keep.shape == (8, 32)
    assert not torch.equal(batch.mask("image", "mae").mask[:, :32], batch.mask("image", "flip").mask[:, :32])
    with pytest.raises(ConfigError, match="batch view 'image' has no mask 'ibot'"):
        batch.mask("image", "ibot")
    again = ViewCollate(plan)(items())
    assert all(torch.equal(batch.masks[k].keep, again.masks[k].keep) for k in batch.masks)  # seeded by the batch


def test_the_default_mask_is_drawn_as_before_named_masks_existed():
    # the default name keeps the older seed, so runs and their losses are bit-equal across the change
    plan = ViewPlan.from_dict({"global": 1, "mask": 0.75, "size": 32, "patch_size": 4})
    batch = ViewCollate(plan)(items())
    from zir.data.paths import hash_seed

    expected = random_mask(8, (8, 8), 0.75, hash_seed(batch.seed, "global_0", "mask"))
    assert torch.equal(batch.mask("global_0").keep, expected.keep)


def test_jepa_targets_and_context_are_blocks_that_never_overlap():
    targets = jepa_target_mask(16, (8, 8), 0.25, seed=3, blocks=4)
    assert targets.keep.shape == (16, 48) and targets.ratio == 0.25
    context = jepa_context_mask(targets, 0.5, seed=4)
    assert context.keep.shape == (16, 32)
    assert not (~context.mask & targets.mask).any()  # no target patch is in the context
    with pytest.raises(ConfigError, match="at least the targets' ratio"):
        jepa_context_mask(targets, 0.1)
    plan = ViewPlan(global_views=1, size=32, patch_size=4, masks={"global_0": (
        MaskSpec("context", 0.6, "jepa_context", outside="targets"), MaskSpec("targets", 0.3, "jepa_targets"))})
    batch = ViewCollate(plan)(items())
    ctx, tgt = batch.mask("global_0", "context"), batch.mask("global_0", "targets")
    assert not (~ctx.mask & tgt.mask).any() and ctx.ratio == pytest.approx(0.6, abs=0.02)


def test_a_recipe_plan_override_cannot_mix_the_flat_mask_keys_with_named_masks():
    with pytest.raises(ConfigError, match="give masks or the flat mask/mask_kind/mask_on keys, not both"):
        ViewPlan.from_dict({"global": 1, "mask": 0.5, "masks": {"global_0": [MaskSpec("mae", 0.75)]}})
    flat = ViewPlan.from_dict({"global": 2, "image": 1, "mask": 0.4, "mask_kind": "block", "mask_on": ["image"]})
    assert flat.masks == {"image": (MaskSpec("mask", 0.4, "block"),)}


def test_the_image_view_follows_image_pipeline_and_the_global_views_follow_pipeline():
    # before image_pipeline, `pipeline` never reached the `image` view (always a light crop), and said nothing
    plain = ViewCollate(ViewPlan(global_views=1, image=1, size=32, pipeline="none", image_pipeline="none"))(items())
    torch.testing.assert_close(plain.views["image"], plain.views["global_0"])  # both the resized image, unaugmented
    light = ViewCollate(ViewPlan(global_views=1, image=1, size=32, pipeline="none"))(items())
    assert not torch.equal(light.views["image"], plain.views["image"])  # the default: a light crop and flip
    torch.testing.assert_close(light.views["global_0"], plain.views["global_0"])
    with pytest.raises(ConfigError, match="view plan field image_pipeline='jitter': expected one of simclr"):
        ViewPlan(image=1, global_views=0, image_pipeline="jitter")
