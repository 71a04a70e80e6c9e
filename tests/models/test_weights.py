"""Weights: safetensors round trips, timm/DeiT/MAE/DINO layouts, containers, and clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, safe_open

import zir
from helpers import FIXTURES, random_images, tiny_vit
from zir.errors import WeightsError
from zir.models import read_state_dict
from zir.models.weights import read_metadata

TIMM = FIXTURES / "timm"


def _to_timm_layout(model):
    """Write a zir ViT state dict the way timm lays it out (joint pos_embed, `reg_token`)."""
    state = dict(model.state_dict())
    if "prefix_pos_embed" in state:
        state["pos_embed"] = torch.cat([state.pop("prefix_pos_embed"), state["pos_embed"]], dim=1)
    if "register_tokens" in state:
        state["reg_token"] = state.pop("register_tokens")
    return state


def test_safetensors_round_trip_restores_outputs(tmp_path):
    source = tiny_vit(reg_tokens=2)
    path = zir.save_weights(source, tmp_path / "w.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary file left behind
    meta = read_metadata(path)
    assert meta["format"] == "zir"
    assert json.loads(meta["zir_config"]) == {"model": "vit_nano_patch4_32", "num_classes": 10, "reg_tokens": 2}
    torch.manual_seed(99)  # a different initialisation, overwritten by the weights
    loaded = zir.create_model("vit_nano_patch4_32", num_classes=10, reg_tokens=2, weights=path).eval()
    x = random_images(seed=3)
    torch.testing.assert_close(loaded(x), source(x), atol=0, rtol=0)
    assert set(load_file(str(path))) == set(source.state_dict())


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 3}, {"reg_tokens": 2, "embed_prefix": False}])
def test_timm_layout_is_recognised_from_its_keys(kw):
    source = tiny_vit(**kw)
    timm_state = _to_timm_layout(source)
    assert "prefix_pos_embed" not in timm_state
    loaded = zir.create_model("vit_nano_patch4_32", num_classes=10, weights=timm_state, **kw).eval()
    torch.testing.assert_close(loaded(random_images(seed=3)), source(random_images(seed=3)), atol=1e-6, rtol=0)


def test_containers_and_prefixes_are_unwrapped(tmp_path):
    source = tiny_vit()
    state = _to_timm_layout(source)
    ddp = {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(ddp, tmp_path / "ckpt.pth")
    loaded = zir.create_model("vit_nano_patch4_32", num_classes=10, weights=tmp_path / "ckpt.pth").eval()
    torch.testing.assert_close(loaded(random_images(seed=3)), source(random_images(seed=3)))


def test_dino_checkpoint_keeps_the_teacher_backbone():
    source = tiny_vit()
    backbone = {k: v for k, v in _to_timm_layout(source).items() if not k.startswith("head.")}
    dino = {
        "teacher": {**{f"backbone.{k}": v for k, v in backbone.items()},
                    "head.mlp.0.weight": torch.zeros(8, 64), "head.last_layer.weight_g": torch.ones(16, 1)},
        "student": {"backbone.cls_token": torch.full((1, 1, 64), 7.0)},
    }
    state = read_state_dict(dino)
    assert "head.mlp.0.weight" not in state and torch.equal(state["cls_token"], backbone["cls_token"])
    loaded = zir.create_model("vit_nano_patch4_32", num_classes=0, weights=dino).eval()
    source.reset_classifier(0)
    torch.testing.assert_close(loaded(random_images(seed=3)), source(random_images(seed=3)))


def test_mae_pretraining_checkpoint_drops_the_decoder():
    source = tiny_vit()
    state = {k: v for k, v in _to_timm_layout(source).items() if not k.startswith("head.")}
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64),
                  "decoder_blocks.0.attn.qkv.weight": torch.zeros(96, 32)})
    with pytest.warns(UserWarning, match="MAE decoder"):
        loaded = zir.create_model("vit_nano_patch4_32", num_classes=0, weights={"model": state})
    torch.testing.assert_close(loaded.pos_embed, source.pos_embed)


def test_other_class_counts_skip_the_head_with_a_warning():
    source = tiny_vit()
    with pytest.warns(UserWarning, match="classifier head"):
        loaded = zir.create_model("vit_nano_patch4_32", num_classes=3, weights=source.state_dict())
    torch.testing.assert_close(loaded.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert loaded.head.weight.shape == (3, 64)


def test_position_embeddings_are_resampled_for_a_new_resolution():
    source = tiny_vit()
    with pytest.warns(UserWarning, match="8x8 to a 16x16"):
        bigger = zir.create_model("vit_nano_patch4_32", num_classes=10, img_size=64,
                                  weights=_to_timm_layout(source)).eval()
    assert bigger.pos_embed.shape == (1, 256, 64)
    torch.testing.assert_close(bigger.prefix_pos_embed, source.prefix_pos_embed)
    assert bigger(random_images(h=64, w=64, seed=3)).shape == (2, 10)


def test_mismatches_are_one_clear_error(tmp_path):
    state = dict(tiny_vit().state_dict())
    state.pop("blocks.1.norm2.weight")
    state["blocks.9.attn.qkv.weight"] = torch.zeros(3, 3)
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(7, 64)
    with pytest.raises(WeightsError) as info:
        zir.create_model("vit_nano_patch4_32", num_classes=10, weights=state)
    message = str(info.value)
    assert "\n" not in message and message.startswith("weights do not fit vit_nano_patch4_32")
    assert "missing blocks.1.norm2.weight" in message
    assert "unexpected blocks.9.attn.qkv.weight" in message
    assert "misshaped blocks.0.mlp.fc1.weight (7, 64) vs model (256, 64)" in message


def test_a_headless_checkpoint_names_the_fix():
    state = {k: v for k, v in tiny_vit().state_dict().items() if not k.startswith("head.")}
    with pytest.raises(WeightsError, match="num_classes=0"):
        zir.create_model("vit_nano_patch4_32", num_classes=10, weights=state)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        zir.create_model("vit_nano_patch4_32", weights=tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="corrupt.safetensors is not a readable safetensors file"):
        zir.create_model("vit_nano_patch4_32", weights=corrupt)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth is not a readable PyTorch checkpoint"):
        zir.create_model("vit_nano_patch4_32", weights=garbage)
    with pytest.raises(WeightsError, match="holds no tensors"):
        read_state_dict({"epoch": 3})


# -- real timm checkpoints, written by tests/fixtures/make_timm_fixtures.py in an environment with timm --
def _timm_to_zir_kwargs(kwargs):
    """The zir overrides of vit_nano_patch4_32 that reproduce a timm VisionTransformer's constructor."""
    out = {"num_classes": kwargs["num_classes"], "img_size": kwargs.get("img_size", 224),
           "mlp_ratio": kwargs.get("mlp_ratio", 4.0), "qk_norm": kwargs.get("qk_norm", False),
           "init_values": kwargs.get("init_values"), "reg_tokens": kwargs.get("reg_tokens", 0),
           "embed_prefix": not kwargs.get("no_embed_class", False),
           "class_token": kwargs.get("class_token", True)}
    pool = kwargs.get("global_pool", "token")
    out["global_pool"] = pool
    fc_norm = kwargs.get("fc_norm")
    out["fc_norm"] = pool == "avg" if fc_norm is None else fc_norm
    return out


def _fixture_files():
    return sorted(TIMM.glob("*.safetensors"))


def test_fixtures_are_present():
    assert len(_fixture_files()) >= 5, "tests/fixtures/timm holds the real timm checkpoints these tests need"


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda p: p.stem)
def test_real_timm_checkpoints_give_timm_outputs(path):
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    kwargs = json.loads(meta["timm_kwargs"])
    assert kwargs["patch_size"] == 4 and kwargs["embed_dim"] == 64 and kwargs["depth"] == 2
    overrides = _timm_to_zir_kwargs(kwargs)
    name = "deit_tiny_distilled_patch16_224" if meta["timm_class"] == "VisionTransformerDistilled" else "vit_nano_patch4_32"
    if name != "vit_nano_patch4_32":
        overrides.update(patch_size=4, embed_dim=64, depth=2, num_heads=2)
    model = zir.create_model(name, weights=state, **overrides).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tensors["input"]), tensors["output"], atol=1e-5, rtol=0)
        if "features" in tensors:
            torch.testing.assert_close(model.forward_features(tensors["input"]), tensors["features"], atol=1e-5, rtol=0)
