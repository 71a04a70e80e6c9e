"""The model zoo: published parameter counts, FLOPs, names and errors."""

import pytest
import torch

import zir
from zir.errors import ConfigError, UnknownNameError
from zir.models import count_flops, count_parameters, get_model_spec, native_size

PUBLISHED = {  # with a 1000-class head, as reported by the papers' reference code and timm
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_large_patch16_224": 304_326_632,
    "vit_base_patch32_224": 88_224_232,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
    "deit_tiny_distilled_patch16_224": 5_910_800,
    "deit_small_distilled_patch16_224": 22_436_432,
    "deit_base_distilled_patch16_224": 87_338_192,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_equal_the_published_ones(name):
    assert count_parameters(name) == PUBLISHED[name]


def test_counting_uses_the_meta_device():
    with torch.device("meta"):
        model = zir.create_model("vit_large_patch16_224")
    assert all(p.is_meta for p in model.parameters())


def _analytic_vit_flops(tokens, patches, dim, depth, mlp_ratio, patch_pixels, classes):
    """2 x multiply-adds of linears and attention matmuls (norms, softmax and adds are not counted)."""
    hidden = int(dim * mlp_ratio)
    per_block = tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * dim * hidden + 2 * tokens * tokens * dim
    return 2 * (depth * per_block + patches * patch_pixels * dim + dim * classes)


def test_flops_follow_the_written_out_count():
    expected = _analytic_vit_flops(197, 196, 768, 12, 4.0, 3 * 16 * 16, 1000)
    assert count_flops("vit_base_patch16_224") == expected
    assert abs(expected / 1e9 - 35.1) < 0.1  # 17.6 GMACs, as published for ViT-B/16
    assert count_flops("vit_nano_patch4_32", batch_size=2) == 2 * _analytic_vit_flops(65, 64, 64, 2, 4.0, 48, 1000)


def test_list_models_filters_by_pattern():
    assert zir.list_models("deit_*distilled*") == [
        "deit_base_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_tiny_distilled_patch16_224"]
    assert {"vit_tiny_patch4_32", "vit_small_patch4_32", "vit_tiny_patch8_64"} <= set(zir.list_models("vit_*"))
    assert zir.list_models("nothing*") == []


def test_cpu_scale_configs_run_at_their_native_size():
    for name, side in [("vit_tiny_patch4_32", 32), ("vit_tiny_patch8_64", 64), ("vit_micro_patch4_32", 32)]:
        assert native_size(name)["img_size"] == side
        model = zir.create_model(name, depth=1, num_classes=4).eval()
        assert model(torch.randn(1, 3, side, side)).shape == (1, 4)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownNameError) as info:
        get_model_spec("vit_smal_patch16_224")
    assert "vit_small_patch16_224" in str(info.value)
    with pytest.raises(UnknownNameError, match="zir models"):
        zir.create_model("resnet50")


def test_overrides_are_checked_and_recorded():
    model = zir.create_model("vit_nano_patch4_32", num_classes=3)
    assert model.zir_config == {"model": "vit_nano_patch4_32", "num_classes": 3}
    with pytest.raises(ConfigError, match="no option widht"):
        zir.create_model("vit_nano_patch4_32", widht=3)


def test_top_level_entry_points_resolve():
    from zir.model import build_model
    from zir.objectives.coca import generate_captions
    from zir.train.runs import load

    assert zir.load is load and zir.generate_captions is generate_captions and zir.build_model is build_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zir.nope  # noqa: B018
