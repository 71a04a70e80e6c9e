"""A released checkpoint as zir towers: `encode_image`, `encode_text`, and weights `model.init` can copy.

`PretrainedModel` holds the towers under `towers.<name>` (the key layout of a `ZirModel`, so `model.init`
copies them like a run's), CLIP's image projection `image_proj` (the text tower projects itself) and its
`logit_scale` (SigLIP: also `logit_bias`; its image tower pools by attention and has no projection). `spec` is its description as data: each tower's zoo name and options (a recipe's
`model.towers` section) and the projection width; `zir export --format hf` and `zir.load` round-trip it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zir.errors import ConfigError, WeightsError

IMAGE_BASE, TEXT_BASE = "vit_base_patch16_224", "clip_text_base"  # zoo names whose options the spec overrides


def tower_section(spec: dict) -> dict:
    """A recipe's `model.towers` section for the towers of `spec` ({image: {model: ..., **options}, ...})."""
    out = {"image": {"model": IMAGE_BASE, **spec["image"]}}
    if "text" in spec:
        out["text"] = {"model": TEXT_BASE, **spec["text"]}
    return out


class PretrainedModel(nn.Module):
    """Towers of a released checkpoint with the encoders its library offers (outputs not L2-normalised)."""

    def __init__(self, spec: dict, tokenizer=None, source: str = "") -> None:
        """`spec`: {image: ViT options, text: text-tower options (optional), projection_dim (CLIP pairs)};
        `tokenizer`: a `TextTokenizer` for `encode_text` on strings; `source`: the format, for messages."""
        from zir.models import create_model

        super().__init__()
        self.spec, self.tokenizer, self.source = spec, tokenizer, source
        self.towers = nn.ModuleDict({name: create_model(s.pop("model"), **s) for name, s in tower_section(spec).items()})
        proj = spec.get("projection_dim")
        width = self.towers["image"].embed_dim
        self.image_proj = nn.Linear(width, int(proj), bias=False) if proj else None
        self.logit_scale = nn.Parameter(torch.zeros(())) if "text" in spec else None
        self.logit_bias = nn.Parameter(torch.zeros(())) if spec.get("logit_bias") else None  # SigLIP's

    def load_converted(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Load weights already in this model's layout; one line naming what does not fit."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        misshaped = [k for k in state if k in expected and state[k].shape != expected[k].shape]
        if missing or unexpected or misshaped:
            detail = "; ".join(f"{label} {', '.join(keys[:3])}" for label, keys in
                               (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if keys)
            raise WeightsError(f"{where}: weights do not fit the model its config describes: {detail}")
        self.load_state_dict({k: v.float() for k, v in state.items()})

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, E) projected features (CLIP), or the pooled CLS output."""
        tower = self.towers["image"]
        pooled = tower.pool(tower.forward_tokens(images))
        return self.image_proj(pooled) if self.image_proj is not None else pooled

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> (B, context_length) ids with the checkpoint's tokenizer."""
        if self.tokenizer is None:
            raise ConfigError(f"{self.source}: no tokenizer.json came with the weights; pass token ids to encode_text")
        return self.tokenizer.encode(list(texts))

    def encode_text(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Strings (tokenised as the checkpoint's tokenizer does) or (B, L) ids -> (B, E) projected features."""
        if "text" not in self.towers:
            raise ConfigError(f"{self.source}: an image-only model has no encode_text")
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        tower = self.towers["text"]
        return tower.pool(tower.forward_tokens(ids.to(tower.token_embedding.weight.device)))
