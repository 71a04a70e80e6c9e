"""Every zoo image-tower family under every objective that can use it: one tiny training step each, or the
one-line ConfigError at build naming the objective, the tower and the capability it lacks."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import TEXT_NANO, first_batch
from zir.data import load_tokenizer, open_source
from zir.errors import ConfigError
from zir.model import build_model
from zir.recipes import TOKENIZERS_DIR

# one small model per zoo family, at 32 px
FAMILIES = {
    "vit": {"model": "vit_nano_patch4_32"},
    "deit_convstem": {"model": "deit_tiny_distilled_patch16_224", "img_size": 32, "patch_size": 4, "embed_dim": 32,
                      "depth": 1, "num_heads": 2, "stem": "conv"},
    "swin": {"model": "swin_micro_patch2_window4_32", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]},
    "mobilevitv2": {"model": "mobilevitv2_050", "img_size": 32, "transformer_depths": [1, 1, 1]},
    "efficientvit": {"model": "efficientvit_m0", "img_size": 32, "depth": [1, 1, 1]},
    "vit_registers": {"model": "vit_micro_patch4_reg4_32", "depth": 1},
    "vit_sepattn": {"model": "vit_micro_sepattn_patch4_32", "depth": 1},
    "vit_cgattn": {"model": "vit_micro_cgattn_patch4_32", "depth": 1},
    "vit_lessattn": {"model": "vit_micro_lessattn_patch4_32"},
    "vit_biglittle": {"model": "vit_nano_biglittle_patch4_32"},
}
HEAD = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16}
OBJECTIVES = {
    "simclr": {"hidden_dim": 32, "out_dim": 16},
    "byol": {"hidden_dim": 32, "out_dim": 16, "pred_hidden_dim": 32},
    "moco_v3": {"hidden_dim": 32, "out_dim": 16, "pred_hidden_dim": 32},
    "dino": {**HEAD, "local_views": 1},
    "mae": {"decoder_depth": 1},
    "simmim": {},
    "ibot": HEAD,
    "ijepa": {"predictor_depth": 1},
    "clip": {},
    "siglip": {},
    "coca": {"decoder_depth": 1},
    "supervised": {"num_classes": 5},
    "vicreg": {"hidden_dim": 32, "out_dim": 16},
    "barlow_twins": {"hidden_dim": 32, "out_dim": 16},
    "simsiam": {"hidden_dim": 32, "out_dim": 16, "pred_dim": 8},
    "masked_dino": HEAD,
    "koleo": {},
    "slip": {"hidden_dim": 32, "out_dim": 16},
    "itm": {"fusion_depth": 1, "fusion_heads": 2},
}
CROSS_MODAL = {"clip", "siglip", "coca", "slip", "itm"}
CONV = {"mobilevitv2": "MobileViTv2", "efficientvit": "EfficientViT"}
REFUSED = {  # (family, objective) -> what the one-line error must say
    **{(f, o): rf"^model\.objectives\.{o}: {o}: the {cls} tower 'image' cannot drop patches \(can_drop_tokens is False\)"
       for f, cls in {"swin": "SwinTransformer", **CONV}.items() for o in ("mae", "ijepa", "masked_dino")},
    **{(f, o): rf"^model\.objectives\.{o}: {o}: the {cls} tower 'image' cannot fill masked patches with a mask token \(has_mask_token is False\)"
       for f, cls in CONV.items() for o in ("simmim", "ibot")},
    ("swin", "ibot"): r"^model\.objectives\.ibot: ibot: the SwinTransformer tower 'image' outputs one token per 4x4 pixels, not one per patch "
                      r"\(feature_stride != patch_size\)",
}


@pytest.fixture(scope="module")
def data():
    return open_source("shapes", split="train", n=4), load_tokenizer(TOKENIZERS_DIR / "shapes.json")


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_under_objective_or_is_refused_in_one_line(family, objective, data):
    source, tokenizer = data
    towers = {"image": dict(FAMILIES[family])}
    if objective in CROSS_MODAL:
        towers["text"] = dict(TEXT_NANO)
    spec = {"towers": towers, "objectives": {objective: dict(OBJECTIVES[objective])}}
    torch.manual_seed(0)
    if (family, objective) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[family, objective]) as err:
            build_model(spec)
        assert "\n" not in str(err.value)
        return
    model = build_model(spec)
    tok = tokenizer if objective in CROSS_MODAL else None
    batch = first_batch(model, source, 4, tok)
    loss = model(batch).loss
    loss.backward()
    assert math.isfinite(loss.item())
    grads = [p.grad for p in model.towers["image"].parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
