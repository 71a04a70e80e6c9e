"""`zir export RUN --format hf`: a transformers-layout folder (config.json, model.safetensors, tokenizer.json,
README.md) that `zir.load` reads back and, where the towers are an architecture transformers has, it loads too.

- a CLIP pair (a plain ViT image tower with `pre_norm: true`, a causal text tower, a `clip` objective):
  `CLIPModel`; the patch projection's bias (CLIP has none) is folded into the position table, and a text
  projection of the objective is folded into the text tower's;
- a plain ViT image tower alone: `ViTModel`; with layer scale or registers, `Dinov2Model` /
  `Dinov2WithRegistersModel` (a layer scale of 1 where the tower has none);
- anything else: `model_type: zir`, the weights in zir's own layout with its model config (zir reads it,
  transformers does not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from zir.errors import ConfigError

LICENCE_DEFAULT = "other"  # the card's licence field: the user's to set (zir export --license)


def _plain_vit(tower: nn.Module) -> str:
    """Why a tower is not a plain ViT transformers can hold, or '' when it is."""
    from zir.models.vit import VisionTransformer

    if type(tower) is not VisionTransformer:
        return f"the image tower is a {type(tower).__name__}, not a ViT"
    checks = {"a conv stem": tower.stem_type != "patch", "no class token": tower.cls_token is None,
              "average pooling": tower.global_pool != "token", "sin-cos positions": tower.pos_embed_type != "learn",
              "a distillation token": tower.dist_token is not None, "less attention": bool(tower.less_attention),
              "QK-norm": not isinstance(tower.blocks[0].attn.q_norm, nn.Identity),
              "no qkv bias": tower.blocks[0].attn.qkv.bias is None,
              "a non-square grid": tower.img_size[0] != tower.img_size[1] or tower.patch_size[0] != tower.patch_size[1]}
    found = [name for name, hit in checks.items() if hit]
    return f"the image tower has {', '.join(found)}" if found else ""


def _act_name(block: nn.Module) -> str:
    from zir.nn import QuickGELU

    return "quick_gelu" if isinstance(block.mlp.act, QuickGELU) else "gelu"


def _vision_blocks(tower: nn.Module, dst: str, clip: bool) -> dict[str, torch.Tensor]:
    out = {}
    names = (("layer_norm1", "layer_norm2", "self_attn.out_proj", "mlp.fc1", "mlp.fc2") if clip else
             ("layernorm_before", "layernorm_after", "attention.output.dense", "intermediate.dense", "output.dense"))
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") if clip else \
        ("attention.attention.query", "attention.attention.key", "attention.attention.value")
    for i, block in enumerate(tower.blocks):
        a = f"{dst}{i}."
        for kind in ("weight", "bias"):
            for name, part in zip(qkv, getattr(block.attn.qkv, kind).chunk(3)):
                out[a + f"{name}.{kind}"] = part
            for name, module in zip(names, (block.norm1, block.norm2, block.attn.proj, block.mlp.fc1, block.mlp.fc2)):
                out[a + f"{name}.{kind}"] = getattr(module, kind)
    return out


def _positions(tower: nn.Module, fold_bias: bool) -> torch.Tensor:
    """(1 + N, D): the CLS position (zeros without one) then the patches' (plus the patch bias when folded)."""
    patches = tower.pos_embed[0]
    if fold_bias and tower.patch_embed.proj.bias is not None:
        patches = patches + tower.patch_embed.proj.bias
    cls = tower.prefix_pos_embed[0, :1] if tower.prefix_pos_embed is not None else torch.zeros_like(patches[:1])
    return torch.cat([cls, patches])


def _vision_config(tower: nn.Module) -> dict:
    block = tower.blocks[0]
    return {"hidden_size": tower.embed_dim, "num_hidden_layers": len(tower.blocks), "num_attention_heads": tower.num_heads,
            "intermediate_size": block.mlp.fc1.out_features, "image_size": tower.img_size[0],
            "patch_size": tower.patch_size[0], "num_channels": tower.in_chans, "hidden_act": _act_name(block),
            "layer_norm_eps": block.norm1.eps}


def clip_to_hf(image: nn.Module, text: nn.Module, image_proj: nn.Module, text_proj: nn.Module, logit_scale: torch.Tensor,
               eot_id: int, sot_id: int | None) -> tuple[dict, dict]:
    """(config.json, state) of transformers' CLIPModel for a zir CLIP pair."""
    why = _plain_vit(image)
    if not why and isinstance(image.norm_pre, nn.Identity):
        why = "the image tower has no pre_norm (CLIP's ln_pre; build it with pre_norm: true)"
    if not why and (image.register_tokens is not None or not isinstance(image.blocks[0].ls1, nn.Identity)):
        why = "the image tower has registers or layer scale"
    if not why and not text.causal:
        why = "the text tower is not causal"
    if why:
        raise ConfigError(f"--format hf: not a transformers CLIPModel: {why}")
    post = image.fc_norm if isinstance(image.norm, nn.Identity) else image.norm  # one LayerNorm on the CLS token
    state = _vision_blocks(image, "vision_model.encoder.layers.", clip=True)
    state["vision_model.embeddings.patch_embedding.weight"] = image.patch_embed.proj.weight
    state["vision_model.embeddings.class_embedding"] = image.cls_token.reshape(-1)
    state["vision_model.embeddings.position_embedding.weight"] = _positions(image, fold_bias=True)
    for kind in ("weight", "bias"):
        state[f"vision_model.pre_layrnorm.{kind}"] = getattr(image.norm_pre, kind)
        state[f"vision_model.post_layernorm.{kind}"] = getattr(post, kind)
        state[f"text_model.final_layer_norm.{kind}"] = text.norm.state_dict()[kind]
    state.update(_vision_blocks(text, "text_model.encoder.layers.", clip=True))
    state["text_model.embeddings.token_embedding.weight"] = text.token_embedding.weight
    state["text_model.embeddings.position_embedding.weight"] = text.pos_embed[0]
    # text: tower projection, then the objective's (each bias-free or absent): one matrix
    width = text.width
    matrix = torch.eye(width)
    for linear in (text.proj, text_proj):
        if isinstance(linear, nn.Linear):
            matrix = linear.weight @ matrix
    state["text_projection.weight"] = matrix
    state["visual_projection.weight"] = image_proj.weight
    state["logit_scale"] = logit_scale.reshape(())
    vision = _vision_config(image)
    text_block = text.blocks[0]
    text_cfg = {"vocab_size": text.vocab_size, "hidden_size": width, "num_hidden_layers": len(text.blocks),
                "num_attention_heads": text_block.attn.num_heads, "intermediate_size": text_block.mlp.fc1.out_features,
                "max_position_embeddings": text.context_length, "hidden_act": _act_name(text_block),
                "layer_norm_eps": text_block.norm1.eps, "eos_token_id": eot_id, "pad_token_id": text.pad_id,
                "bos_token_id": sot_id if sot_id is not None else eot_id, "projection_dim": matrix.shape[0]}
    vision["projection_dim"] = matrix.shape[0]
    config = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": matrix.shape[0],
              "logit_scale_init_value": 2.6592, "text_config": text_cfg, "vision_config": vision}
    return config, state


def vit_to_hf(image: nn.Module) -> tuple[dict, dict]:
    """(config.json, state) of ViTModel, or Dinov2(WithRegisters)Model for layer scale or registers."""
    why = _plain_vit(image) or ("the image tower has pre_norm or fc_norm" if not isinstance(image.norm_pre, nn.Identity)
                                or isinstance(image.norm, nn.Identity) else "")
    if why:
        raise ConfigError(f"--format hf: not a transformers ViT: {why}")
    block = image.blocks[0]
    dinov2 = image.register_tokens is not None or not isinstance(block.ls1, nn.Identity)
    config = _vision_config(image)
    if dinov2:
        state = {}
        for i, blk in enumerate(image.blocks):
            a = f"encoder.layer.{i}."
            for kind in ("weight", "bias"):
                for name, part in zip(("query", "key", "value"), getattr(blk.attn.qkv, kind).chunk(3)):
                    state[a + f"attention.attention.{name}.{kind}"] = part
                for name, module in (("norm1", blk.norm1), ("norm2", blk.norm2), ("attention.output.dense", blk.attn.proj),
                                     ("mlp.fc1", blk.mlp.fc1), ("mlp.fc2", blk.mlp.fc2)):
                    state[a + f"{name}.{kind}"] = getattr(module, kind)
            for n, ls in ((1, blk.ls1), (2, blk.ls2)):
                state[a + f"layer_scale{n}.lambda1"] = ls.gamma if hasattr(ls, "gamma") else torch.ones(image.embed_dim)
        registers = image.num_reg_tokens
        kind = "dinov2_with_registers" if registers else "dinov2"
        ratio, rest = divmod(block.mlp.fc1.out_features, image.embed_dim)
        if rest:
            raise ConfigError(f"--format hf: DINOv2 needs a whole MLP ratio; the tower's is "
                              f"{block.mlp.fc1.out_features}/{image.embed_dim}")
        config.update(model_type=kind, architectures=["Dinov2WithRegistersModel" if registers else "Dinov2Model"],
                      mlp_ratio=ratio, layerscale_value=1.0, use_swiglu_ffn=False,
                      qkv_bias=True)
        if registers:
            config["num_register_tokens"] = registers
            state["embeddings.register_tokens"] = image.register_tokens
            if image.prefix_pos_embed is not None and image.prefix_pos_embed[0, 1:].abs().max() > 0:
                raise ConfigError("--format hf: the image tower's registers have position embeddings; DINOv2's have none")
        mask = image.mask_token.reshape(1, -1) if image.mask_token is not None else torch.zeros(1, image.embed_dim)
        state["embeddings.mask_token"] = mask
    else:
        state = _vision_blocks(image, "encoder.layer.", clip=False)
        config.update(model_type="vit", architectures=["ViTModel"], qkv_bias=True)
    state["embeddings.cls_token"] = image.cls_token
    state["embeddings.position_embeddings"] = _positions(image, fold_bias=False)[None]
    for kind in ("weight", "bias"):
        state[f"embeddings.patch_embeddings.projection.{kind}"] = getattr(image.patch_embed.proj, kind)
        state[f"layernorm.{kind}"] = getattr(image.norm, kind)
    return config, state


def save_hf_weights(state: dict[str, torch.Tensor], path: Path, extra: dict[str, str] | None = None) -> None:
    """model.safetensors as transformers writes it (metadata format=pt), atomically."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()}, str(tmp),
              metadata={"format": "pt", **(extra or {})})
    os.replace(tmp, path)


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
