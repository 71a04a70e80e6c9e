"""open_clip / OpenAI CLIP state dicts (`visual.conv1`, `transformer.resblocks.N`, `ln_final`, ...) as zir towers.

Sizes come from the tensors' shapes, except the number of attention heads, which no shape records: it is
read from an `open_clip_config.json` beside the weights (open_clip's hub files: `model_cfg.vision_cfg.width /
head_width`, `model_cfg.text_cfg.heads`), else OpenAI's rule of 64 channels per head. The MLP activation is
QuickGELU (OpenAI's weights and open_clip's `-quickgelu` models) unless that config says `quick_gelu: false`.
The text tower pools where open_clip does, at the highest token id (CLIP's end token, the last id).
"""

from __future__ import annotations

import math

import torch

from zir.errors import WeightsError

MARKERS = ("visual.conv1.weight", "visual.class_embedding", "text_projection")
_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "attn.out_proj": "attn.proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # integers in OpenAI's released files


def is_open_clip(state: dict) -> bool:
    """Whether a state dict is in open_clip's / OpenAI's CLIP layout (a ViT image tower)."""
    return all(k in state for k in MARKERS)


def _blocks(state: dict, src: str) -> tuple[dict, int]:
    layers = {int(k[len(src):].split(".")[0]) for k in state if k.startswith(src)}
    out = {}
    for i in range(max(layers) + 1 if layers else 0):
        a, b = f"{src}{i}.", f"blocks.{i}."
        out[b + "attn.qkv.weight"], out[b + "attn.qkv.bias"] = state[a + "attn.in_proj_weight"], state[a + "attn.in_proj_bias"]
        for name, zir_name in _BLOCK.items():
            for kind in ("weight", "bias"):
                out[b + f"{zir_name}.{kind}"] = state[a + f"{name}.{kind}"]
    return out, len(layers)


def from_open_clip(state: dict[str, torch.Tensor], model_cfg: dict | None, where: str) -> tuple[dict, dict]:
    """(spec, state) in `PretrainedModel`'s layout from an open_clip / OpenAI CLIP state dict."""
    if not is_open_clip(state):
        raise WeightsError(f"{where}: not an open_clip ViT CLIP state dict (needs {', '.join(MARKERS)})")
    cfg = model_cfg or {}
    vcfg, tcfg = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    act = "quick_gelu" if cfg.get("quick_gelu", True) else "gelu"
    state = {k: v for k, v in state.items() if k not in _OPENAI_EXTRAS}

    image, depth = _blocks(state, "visual.transformer.resblocks.")
    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    pos = state["visual.positional_embedding"]
    side = math.isqrt(pos.shape[0] - 1)
    if side * side != pos.shape[0] - 1:
        raise WeightsError(f"{where}: visual.positional_embedding has {pos.shape[0]} rows, not 1 + a square grid")
    heads = width // int(vcfg.get("head_width", 64))
    text_width = state["token_embedding.weight"].shape[1]
    text_heads = int(tcfg.get("heads", text_width // 64))
    if heads < 1 or text_heads < 1 or width % heads or text_width % text_heads:
        raise WeightsError(f"{where}: the widths ({width}, {text_width}) do not split into heads of 64 channels; put "
                           "open_clip's open_clip_config.json (model_cfg with vision_cfg.head_width, text_cfg.heads) beside it")
    proj = state["visual.proj"]
    hidden = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    spec_image = dict(embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=hidden / width, img_size=side * patch,
                      patch_size=patch, act=act, num_classes=0, layer_norm_eps=1e-5, pre_norm=True, fc_norm=True)
    image.update({"cls_token": state["visual.class_embedding"].reshape(1, 1, -1), "prefix_pos_embed": pos[None, :1],
                  "pos_embed": pos[None, 1:], "patch_embed.proj.weight": conv,
                  "patch_embed.proj.bias": torch.zeros(width, dtype=conv.dtype)})
    for kind in ("weight", "bias"):
        image[f"norm_pre.{kind}"], image[f"fc_norm.{kind}"] = state[f"visual.ln_pre.{kind}"], state[f"visual.ln_post.{kind}"]

    text, text_depth = _blocks(state, "transformer.resblocks.")
    vocab, text_width = state["token_embedding.weight"].shape
    text_hidden = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    spec_text = dict(vocab_size=vocab, context_length=state["positional_embedding"].shape[0], width=text_width,
                     depth=text_depth, num_heads=text_heads, mlp_ratio=text_hidden / text_width,
                     embed_dim=state["text_projection"].shape[1], eot_id=vocab - 1, pad_id=vocab - 1, act=act)
    text.update({"token_embedding.weight": state["token_embedding.weight"], "pos_embed": state["positional_embedding"][None],
                 "proj.weight": state["text_projection"].T, "norm.weight": state["ln_final.weight"],
                 "norm.bias": state["ln_final.bias"]})
    out = {f"towers.image.{k}": v for k, v in image.items()}
    out.update({f"towers.text.{k}": v for k, v in text.items()})
    out["image_proj.weight"] = proj.T
    out["logit_scale"] = state["logit_scale"].reshape(())
    return {"image": spec_image, "text": spec_text, "projection_dim": proj.shape[1]}, out



def from_hf_clip(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPModel weights -> open_clip's layout (the reverse renaming of `from_open_clip`'s input)."""
    out: dict[str, torch.Tensor] = {}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
    for src, dst in (("vision_model.encoder.layers.", "visual.transformer.resblocks."),
                     ("text_model.encoder.layers.", "transformer.resblocks.")):
        layers = sorted({int(k[len(src):].split(".")[0]) for k in hf if k.startswith(src)})
        for i in layers:
            a, b = f"{src}{i}.", f"{dst}{i}."
            out[b + "attn.in_proj_weight"] = torch.cat([hf[a + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            out[b + "attn.in_proj_bias"] = torch.cat([hf[a + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            for name, new in names.items():
                for kind in ("weight", "bias"):
                    out[b + f"{new}.{kind}"] = hf[a + f"{name}.{kind}"]
    out["visual.conv1.weight"] = hf["vision_model.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = hf["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = hf["vision_model.embeddings.position_embedding.weight"]
    out["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = hf[f"vision_model.pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = hf[f"vision_model.post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = hf[f"text_model.final_layer_norm.{kind}"]
    out["visual.proj"] = hf["visual_projection.weight"].T
    out["text_projection"] = hf["text_projection.weight"].T
    out["logit_scale"] = hf["logit_scale"].reshape(())
    return {k: v.contiguous() for k, v in out.items()}


def open_clip_config(hf_config: dict) -> dict:
    """open_clip's `open_clip_config.json` (model_cfg) for a transformers CLIP config."""
    v, t = hf_config["vision_config"], hf_config["text_config"]
    acts = {v["hidden_act"], t["hidden_act"]}
    if len(acts) != 1:
        raise WeightsError("--format open_clip: the image and text towers use different activations; open_clip "
                           "has one quick_gelu switch for both")
    return {"model_cfg": {
        "embed_dim": hf_config["projection_dim"], "quick_gelu": acts == {"quick_gelu"},
        "vision_cfg": {"image_size": v["image_size"], "layers": v["num_hidden_layers"], "width": v["hidden_size"],
                       "head_width": v["hidden_size"] // v["num_attention_heads"], "patch_size": v["patch_size"],
                       "mlp_ratio": v["intermediate_size"] / v["hidden_size"]},
        "text_cfg": {"context_length": t["max_position_embeddings"], "vocab_size": t["vocab_size"],
                     "width": t["hidden_size"], "heads": t["num_attention_heads"], "layers": t["num_hidden_layers"],
                     "mlp_ratio": t["intermediate_size"] / t["hidden_size"]}}}
