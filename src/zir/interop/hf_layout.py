"""Hugging Face `transformers` folders (config.json + model.safetensors) as zir towers.

The config's `model_type` names the architecture; its sizes become the options of zir's ViT and text
towers, and the weights are renamed (and q/k/v fused) into zir's layout. Only the config's numbers and
strings are read: nothing named in the folder is imported or run. Supported: `clip` (CLIPModel: ViT image
tower with `pre_layrnorm` and a post-pool LayerNorm, causal text tower pooled at the first end-of-text id,
both projected), `siglip` (SiglipModel: a ViT without class token pooled by attention, a bidirectional
text tower pooled at its last position with a biased head), `vit` (ViTModel), `vit_mae` (ViTMAEModel, its encoder), `dinov2` and
`dinov2_with_registers` (LayerScale, registers, mask token). `to_hf` writes the reverse for a CLIP pair.
"""

from __future__ import annotations

from typing import Any

import torch

from zir.errors import WeightsError

VISION_TYPES = ("vit", "vit_mae", "dinov2", "dinov2_with_registers")
MODEL_TYPES = ("clip", "siglip") + VISION_TYPES
ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh"}
# the ViT-family (ViTModel, ViTMAEModel, Dinov2Model) per-layer names -> zir's Block names
_VIT_LAYER = {"layernorm_before": "norm1", "layernorm_after": "norm2", "norm1": "norm1", "norm2": "norm2",
              "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
              "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_CLIP_LAYER = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_CLIP_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _get(cfg: dict, key: str, default: Any = None, where: str = "config.json") -> Any:
    value = cfg.get(key, default)
    if value is None:
        raise WeightsError(f"{where}: missing field {key!r}")
    return value


def _act(cfg: dict, where: str) -> str:
    name = cfg.get("hidden_act", "gelu")
    if name not in ACTS:
        raise WeightsError(f"{where}: hidden_act={name!r} is not supported; expected one of {', '.join(ACTS)}")
    return ACTS[name]


def vision_options(cfg: dict, model_type: str, where: str = "config.json") -> dict:
    """zir ViT options (for `create_model('vit_base_patch16_224', **options)`) from a vision config."""
    hidden = int(_get(cfg, "hidden_size", where=where))
    options = dict(embed_dim=hidden, depth=int(_get(cfg, "num_hidden_layers", where=where)),
                   num_heads=int(_get(cfg, "num_attention_heads", where=where)),
                   img_size=int(_get(cfg, "image_size", where=where)), patch_size=int(_get(cfg, "patch_size", where=where)),
                   in_chans=int(cfg.get("num_channels", 3)), act=_act(cfg, where), num_classes=0,
                   layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)), qkv_bias=bool(cfg.get("qkv_bias", True)))
    if model_type.startswith("dinov2"):
        if cfg.get("use_swiglu_ffn"):
            raise WeightsError(f"{where}: use_swiglu_ffn=true (DINOv2 giant's SwiGLU MLP) is not supported")
        options.update(mlp_ratio=float(cfg.get("mlp_ratio", 4)), init_values=float(cfg.get("layerscale_value", 1.0)) or 1.0,
                       mask_token=True, layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)),
                       reg_tokens=int(cfg.get("num_register_tokens", 0)))
    else:
        options.update(mlp_ratio=int(_get(cfg, "intermediate_size", where=where)) / hidden)
    if model_type == "clip":
        options.update(pre_norm=True, fc_norm=True, layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)))
    if model_type == "siglip":  # no class token; the image embedding is the attention-pooling head's
        if not cfg.get("vision_use_head", True):
            raise WeightsError(f"{where}: vision_use_head=false (no pooling head) is not supported")
        options.update(class_token=False, global_pool="map", layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)))
    return options


def text_options(cfg: dict, projection_dim: int, where: str = "config.json text_config") -> dict:
    """zir text-tower options from CLIP's text config; `eot_id` pools as transformers does."""
    hidden = int(_get(cfg, "hidden_size", where=where))
    vocab = int(_get(cfg, "vocab_size", where=where))
    eos = int(cfg.get("eos_token_id", 2))
    # transformers' legacy configs (eos_token_id 2) pool at the highest id, which is CLIP's end token, the last id
    eot = vocab - 1 if eos == 2 else eos
    return dict(vocab_size=vocab, context_length=int(_get(cfg, "max_position_embeddings", where=where)), width=hidden,
                depth=int(_get(cfg, "num_hidden_layers", where=where)), num_heads=int(_get(cfg, "num_attention_heads", where=where)),
                mlp_ratio=int(_get(cfg, "intermediate_size", where=where)) / hidden, embed_dim=projection_dim,
                eot_id=eot, pad_id=eot, act=_act(cfg, where))


def siglip_text_options(cfg: dict, where: str = "config.json text_config") -> dict:
    """zir text-tower options from SigLIP's text config: bidirectional, pooled at the last position, biased head."""
    hidden = int(_get(cfg, "hidden_size", where=where))
    return dict(vocab_size=int(_get(cfg, "vocab_size", where=where)),
                context_length=int(_get(cfg, "max_position_embeddings", where=where)), width=hidden,
                depth=int(_get(cfg, "num_hidden_layers", where=where)),
                num_heads=int(_get(cfg, "num_attention_heads", where=where)),
                mlp_ratio=int(_get(cfg, "intermediate_size", where=where)) / hidden,
                embed_dim=int(cfg.get("projection_size") or hidden), causal=False, pool_last=True, proj_bias=True,
                pad_id=int(cfg.get("pad_token_id") or 0), act=_act(cfg, where),
                layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)))


def _blocks(state: dict, src: str, layer_names: dict, qkv: tuple, depth: int) -> dict:
    """Per-layer weights of an HF encoder (`src` = '...layer.' or '...layers.') in zir's Block names."""
    out = {}
    for i in range(depth):
        a, b = f"{src}{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            parts = [state.get(a + f"{n}.{kind}") for n in qkv]
            if all(p is not None for p in parts):
                out[b + f"attn.qkv.{kind}"] = torch.cat(parts)
            for hf_name, zir_name in layer_names.items():
                if a + f"{hf_name}.{kind}" in state:
                    out[b + f"{zir_name}.{kind}"] = state[a + f"{hf_name}.{kind}"]
        for n in (1, 2):
            if a + f"layer_scale{n}.lambda1" in state:
                out[b + f"ls{n}.gamma"] = state[a + f"layer_scale{n}.lambda1"]
    return out


def _depth(state: dict, src: str) -> int:
    layers = {int(k[len(src):].split(".")[0]) for k in state if k.startswith(src)}
    return max(layers) + 1 if layers else 0


def vision_state(state: dict, model_type: str, reg_tokens: int = 0) -> dict:
    """An HF vision encoder's weights (prefix stripped) in zir's ViT layout."""
    if model_type == "siglip":
        depth = _depth(state, "encoder.layers.")
        out = _blocks(state, "encoder.layers.", _CLIP_LAYER, _CLIP_QKV, depth)
        out["pos_embed"] = state["embeddings.position_embedding.weight"][None]
        out["attn_pool.probe"] = state["head.probe"]
        out["attn_pool.attn.in_proj_weight"] = state["head.attention.in_proj_weight"]
        out["attn_pool.attn.in_proj_bias"] = state["head.attention.in_proj_bias"]
        for kind in ("weight", "bias"):
            out[f"patch_embed.proj.{kind}"] = state[f"embeddings.patch_embedding.{kind}"]
            out[f"norm.{kind}"] = state[f"post_layernorm.{kind}"]
            out[f"attn_pool.attn.out_proj.{kind}"] = state[f"head.attention.out_proj.{kind}"]
            out[f"attn_pool.norm.{kind}"] = state[f"head.layernorm.{kind}"]
            for fc in ("fc1", "fc2"):
                out[f"attn_pool.mlp.{fc}.{kind}"] = state[f"head.mlp.{fc}.{kind}"]
        return out
    if model_type == "clip":
        depth = _depth(state, "encoder.layers.")
        out = _blocks(state, "encoder.layers.", _CLIP_LAYER, _CLIP_QKV, depth)
        pos = state["embeddings.position_embedding.weight"][None]
        out["cls_token"] = state["embeddings.class_embedding"].reshape(1, 1, -1)
        out["patch_embed.proj.weight"] = state["embeddings.patch_embedding.weight"]
        out["patch_embed.proj.bias"] = torch.zeros(pos.shape[-1])  # CLIP's patch projection has no bias
        for kind in ("weight", "bias"):
            out[f"norm_pre.{kind}"] = state[f"pre_layrnorm.{kind}"]
            out[f"fc_norm.{kind}"] = state[f"post_layernorm.{kind}"]
    else:
        depth = _depth(state, "encoder.layer.")
        out = _blocks(state, "encoder.layer.", _VIT_LAYER, _VIT_QKV, depth)
        pos = state["embeddings.position_embeddings"]
        out["cls_token"] = state["embeddings.cls_token"]
        for kind in ("weight", "bias"):
            out[f"patch_embed.proj.{kind}"] = state[f"embeddings.patch_embeddings.projection.{kind}"]
            out[f"norm.{kind}"] = state[f"layernorm.{kind}"]
        if "embeddings.mask_token" in state:
            out["mask_token"] = state["embeddings.mask_token"].reshape(1, 1, -1)
    # position 0 is the CLS token's; registers (DINOv2) come after it and get no position embedding
    prefix = pos[:, :1]
    if reg_tokens:
        out["register_tokens"] = state["embeddings.register_tokens"]
        prefix = torch.cat([prefix, torch.zeros(1, reg_tokens, pos.shape[-1], dtype=pos.dtype)], dim=1)
    out["prefix_pos_embed"], out["pos_embed"] = prefix, pos[:, 1:]
    return out


def text_state(state: dict) -> dict:
    """CLIP's text model weights (prefix `text_model.` stripped) in zir's text-tower layout (no projection)."""
    out = _blocks(state, "encoder.layers.", _CLIP_LAYER, _CLIP_QKV, _depth(state, "encoder.layers."))
    out["token_embedding.weight"] = state["embeddings.token_embedding.weight"]
    out["pos_embed"] = state["embeddings.position_embedding.weight"][None]
    for kind in ("weight", "bias"):
        out[f"norm.{kind}"] = state[f"final_layer_norm.{kind}"]
    return out


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def from_hf(config: dict, state: dict[str, torch.Tensor], where: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, state): the zir tower options and the weights in `PretrainedModel`'s layout."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise WeightsError(f"{where}: model_type={model_type!r} is not one zir reads; expected one of {', '.join(MODEL_TYPES)}")
    if model_type == "clip":
        vcfg, tcfg = config.get("vision_config") or {}, config.get("text_config") or {}
        proj = int(config.get("projection_dim", 512))
        spec = {"image": vision_options(vcfg, "clip", f"{where} vision_config"),
                "text": text_options(tcfg, proj, f"{where} text_config"), "projection_dim": proj}
        out = {f"towers.image.{k}": v for k, v in vision_state(_strip(state, "vision_model."), "clip").items()}
        out.update({f"towers.text.{k}": v for k, v in text_state(_strip(state, "text_model.")).items()})
        out["towers.text.proj.weight"] = state["text_projection.weight"]
        out["image_proj.weight"] = state["visual_projection.weight"]
        out["logit_scale"] = state["logit_scale"].reshape(())
        return spec, out
    if model_type == "siglip":
        vcfg, tcfg = config.get("vision_config") or {}, config.get("text_config") or {}
        spec = {"image": vision_options(vcfg, "siglip", f"{where} vision_config"),
                "text": siglip_text_options(tcfg, f"{where} text_config"), "logit_bias": True}
        out = {f"towers.image.{k}": v for k, v in vision_state(_strip(state, "vision_model."), "siglip").items()}
        text = _strip(state, "text_model.")
        out.update({f"towers.text.{k}": v for k, v in text_state(text).items()})
        out["towers.text.proj.weight"], out["towers.text.proj.bias"] = text["head.weight"], text["head.bias"]
        out["logit_scale"], out["logit_bias"] = state["logit_scale"].reshape(()), state["logit_bias"].reshape(())
        return spec, out
    options = vision_options(config, model_type, where)
    for prefix in ("vit.", "dinov2.", "dinov2_with_registers.", "model."):  # a task model's backbone
        if any(k.startswith(prefix + "embeddings.") for k in state):
            state = _strip(state, prefix)
    if not options.get("mask_token") and "embeddings.mask_token" in state:
        options["mask_token"] = True  # ViTModel(use_mask_token=True)
    converted = vision_state(state, model_type, options.get("reg_tokens", 0))
    return {"image": options}, {f"towers.image.{k}": v for k, v in converted.items()}
