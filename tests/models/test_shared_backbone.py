"""VATT's modality-agnostic backbone: `model.share_transformer: [image, audio]` gives the image and audio towers
ONE set of transformer weights, each keeping its own patch embedding, position embeddings and class token."""

from __future__ import annotations

import pytest
import torch

from zir.errors import ConfigError
from zir.model import build_model
from zir.models.shared_backbone import transformer_parameters

TOWERS = {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
          "text": {"model": "text_nano", "vocab_size": 322, "context_length": 8},
          "audio": {"model": "ast_nano"}}  # both 64 wide, 2 blocks, 2 heads
OBJECTIVES = {"imagebind": {"bind": ["text", "audio"]}}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # nn.Module.parameters() counts a shared tensor once


def test_the_shared_model_has_one_transformer_fewer_than_separate_towers():
    separate = build_model({"towers": TOWERS, "objectives": OBJECTIVES})
    shared = build_model({"towers": TOWERS, "objectives": OBJECTIVES, "share_transformer": ["image", "audio"]})
    image, audio = shared.towers["image"], shared.towers["audio"]
    assert image.blocks is audio.blocks and image.norm is audio.norm
    one = transformer_parameters(image)
    assert one == transformer_parameters(separate.towers["audio"]) == 2 * 49_984 + 128  # 2 blocks of width 64 (MLP 256) and the final norm
    assert n_params(separate) - n_params(shared) == one
    block_weights = {id(p) for t in shared.towers.values() if t.modality != "text" for p in t.blocks.parameters()}
    assert len(block_weights) == len(list(image.blocks.parameters()))  # ONE set of transformer weights
    # modality-specific tokenizers stay apart
    assert image.patch_embed is not audio.patch_embed and image.pos_embed is not audio.pos_embed
    assert image.patch_embed.proj.weight.shape[1] == 3 and audio.patch_embed.proj.weight.shape[1] == 1


def test_both_modalities_train_the_one_transformer():
    torch.manual_seed(0)
    shared = build_model({"towers": TOWERS, "objectives": OBJECTIVES, "share_transformer": ["image", "audio"]})
    image, audio = shared.towers["image"], shared.towers["audio"]
    weight = image.blocks[0].attn.qkv.weight
    image.pool(image.forward_tokens(torch.randn(2, 3, 16, 16))).pow(3).sum().backward()
    from_image = weight.grad.clone()
    audio.pool(audio.forward_tokens(torch.randn(2, 1, 64, 64))).pow(3).sum().backward()
    assert from_image.abs().sum() > 0 and not torch.equal(weight.grad, from_image)  # audio added to the same grad
    params = [p for g in shared.param_groups(0.1) for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(shared.parameters()))  # each weight updated once
    names = [n for g in shared.param_groups(0.1) for n in g["names"]]
    assert "towers.image.blocks.0.attn.qkv.weight" in names and "towers.audio.blocks.0.attn.qkv.weight" not in names
    state = shared.state_dict()
    assert torch.equal(state["towers.image.blocks.0.attn.qkv.weight"], state["towers.audio.blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("share,towers,message", [
    (["image", "nope"], TOWERS, r"^model.share_transformer: no tower 'nope'"),
    ("image", TOWERS, r"^model.share_transformer='image': expected a list of two or more distinct tower names"),
    (["image", "text"], TOWERS, r"^model.share_transformer: tower 'text' is a TextTransformer; only plain ViT towers"),
    (["image", "audio"], {**TOWERS, "audio": {"model": "ast_micro"}},
     r"^model.share_transformer: tower 'audio' \(128 wide, 4 blocks\) does not fit the transformer of 'image'"),
])
def test_towers_that_cannot_share_are_one_line_errors(share, towers, message):
    with pytest.raises(ConfigError, match=message):
        build_model({"towers": towers, "objectives": OBJECTIVES, "share_transformer": share})
