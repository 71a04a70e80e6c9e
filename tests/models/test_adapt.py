"""`model.adapt`: LoRA on a tower leaves it unchanged at build, freezing options train what they say, counted,
and malformed settings fail in one line naming the field."""

from __future__ import annotations

import pytest
import torch

from zir.errors import ConfigError
from zir.model import build_model
from zir.models.adapt import parameter_counts
from zir.nn.lora import LoRALinear

TOWER = {"model": "vit_nano_patch4_32", "img_size": 16}  # width 64, 2 blocks, MLP 256
HEAD = 64 * 3 + 3  # the supervised objective's linear head on 3 classes
BLOCK_LORA_R2 = 2 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))  # qkv, proj, fc1, fc2 at rank 2


def model(adapt: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    section = {"towers": {"image": dict(TOWER)}, "objectives": {"supervised": {"num_classes": 3}}}
    if adapt is not None:
        section["adapt"] = adapt
    return build_model(section)


def trainable_names(m) -> list[str]:
    return [n for n, p in m.named_parameters() if p.requires_grad]


def test_lora_at_build_leaves_the_tower_outputs_unchanged():
    plain, adapted = model(), model({"lora": {"rank": 2, "alpha": 4}})
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(adapted.towers["image"].forward_tokens(x), plain.towers["image"].forward_tokens(x))
    wrapped = [m for m in adapted.towers["image"].modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 4 and {m.rank for m in wrapped} == {2}
    # the tower keeps every key it had, so a pretrained checkpoint still loads into it
    assert set(plain.towers["image"].state_dict()) < set(adapted.towers["image"].state_dict())


def test_lora_trains_only_its_factors_and_the_heads_counted():
    m = model({"lora": {"rank": 2}})
    names = trainable_names(m)
    assert all(n.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for n in names if n.startswith("towers."))
    trainable, total = parameter_counts(m)
    plain_total = parameter_counts(model())[1]
    assert trainable == 2 * BLOCK_LORA_R2 + HEAD == 4291
    assert total == plain_total + 2 * BLOCK_LORA_R2
    groups = m.param_groups(0.05, layer_decay=0.75, base_lr=1e-3)  # what the optimizer gets
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable


def test_lora_targets_pick_the_named_projections_only():
    m = model({"lora": {"rank": 1, "targets": ["qkv"]}})
    assert parameter_counts(m)[0] == 2 * (64 + 192) + HEAD
    assert isinstance(m.towers["image"].blocks[0].attn.qkv, LoRALinear)
    assert not isinstance(m.towers["image"].blocks[0].mlp.fc1, LoRALinear)


def test_bias_only_trains_every_bias_of_the_tower():
    m = model({"trainable": "bias"})
    tower = m.towers["image"]
    biases = sum(p.numel() for n, p in tower.named_parameters() if n.endswith("bias"))
    assert parameter_counts(m)[0] == biases + HEAD
    assert all(n.endswith("bias") for n in trainable_names(m) if n.startswith("towers."))


@pytest.mark.parametrize("last", [0, 1, 2])
def test_last_blocks_trains_those_blocks_and_the_final_norm(last):
    m = model({"trainable": {"last_blocks": last}})
    tower = m.towers["image"]
    norm = sum(p.numel() for n, p in tower.named_parameters() if n.startswith(("norm.", "fc_norm.")))
    block = sum(p.numel() for p in tower.blocks[0].parameters())
    assert parameter_counts(m)[0] == HEAD + norm + last * block
    assert all(not p.requires_grad for p in tower.patch_embed.parameters())
    assert tower.blocks[1].attn.qkv.weight.requires_grad == (last >= 1)
    assert tower.blocks[0].attn.qkv.weight.requires_grad == (last >= 2)


def test_lora_with_last_blocks_trains_both():
    m = model({"lora": {"rank": 2}, "trainable": {"last_blocks": 1}})
    tower = m.towers["image"]
    norm = sum(p.numel() for n, p in tower.named_parameters() if n.startswith(("norm.", "fc_norm.")))
    block = sum(p.numel() for p in tower.blocks[1].parameters())  # its LoRA factors included
    assert parameter_counts(m)[0] == HEAD + norm + block + BLOCK_LORA_R2


def test_an_ema_teacher_copies_the_adapted_tower():
    torch.manual_seed(0)
    m = build_model({"towers": {"image": dict(TOWER)}, "adapt": {"lora": {"rank": 2}},
                     "objectives": {"dino": {"out_dim": 32}}})
    teacher = m.teachers["image_teacher"].module
    assert isinstance(teacher.blocks[0].attn.qkv, LoRALinear)
    m.after_step(0, 10)  # the EMA update pairs student and teacher parameters one to one


@pytest.mark.parametrize("adapt, field", [
    ("lora", "model.adapt='lora'"),
    ({"lora": {"rank": 0}}, "model.adapt.lora.rank=0"),
    ({"lora": {"rank": 2.5}}, "model.adapt.lora.rank=2.5"),
    ({"lora": {"alpha": -1}}, "model.adapt.lora.alpha=-1"),
    ({"lora": {"dropout": 1.0}}, "model.adapt.lora.dropout=1.0"),
    ({"lora": {"rnak": 4}}, "model.adapt.lora.rnak: no such field"),
    ({"lora": {"targets": []}}, "model.adapt.lora.targets=[]"),
    ({"lora": {"targets": ["q_proj"]}}, "model.adapt.lora.targets: tower 'image' (VisionTransformer) has no linear layer named 'q_proj'"),
    ({"trainable": "lora"}, "model.adapt.trainable=lora: needs model.adapt.lora"),
    ({"trainable": "head"}, "model.adapt.trainable='head'"),
    ({"trainable": {"last_blocks": -1}}, "model.adapt.trainable.last_blocks=-1"),
    ({"towers": ["text"], "trainable": "bias"}, "model.adapt.towers: 'text' is not a tower"),
    ({"freeze": True}, "model.adapt.freeze: no such field"),
])
def test_malformed_adapt_fails_in_one_line_naming_the_field(adapt, field):
    with pytest.raises(ConfigError) as err:
        model(adapt)
    message = str(err.value)
    assert message.startswith(field) and "\n" not in message, message


@pytest.mark.parametrize("tower, x", [
    ({"model": "swin_micro_patch2_window4_32"}, lambda: torch.randn(2, 3, 32, 32)),
    ({"model": "ast_nano"}, None),
    ({"model": "text_nano", "vocab_size": 50, "context_length": 8}, lambda: torch.randint(0, 50, (2, 8))),
])
def test_lora_fits_other_towers_unchanged_at_build(tower, x):
    from zir.models import create_model
    from zir.models.adapt import adapt_towers

    torch.manual_seed(0)
    plain = create_model(tower["model"], num_classes=0, **{k: v for k, v in tower.items() if k != "model"}).eval()
    torch.manual_seed(0)
    adapted = create_model(tower["model"], num_classes=0, **{k: v for k, v in tower.items() if k != "model"}).eval()
    adapt_towers({"t": adapted}, {"lora": {"rank": 2, "targets": ["qkv", "proj"]}})
    assert any(isinstance(m, LoRALinear) for m in adapted.modules())
    if x is None:  # an audio tower: its own spectrogram shape
        x = lambda: torch.randn(2, adapted.in_chans, *adapted.img_size)  # noqa: E731
    inputs = x()
    with torch.no_grad():
        assert torch.equal(adapted.forward_tokens(inputs), plain.forward_tokens(inputs))
