"""Image-text matching (ALBEF/ViLBERT-style fusion): a cross-attention fusion module trained with an ITM loss
on hard negatives, beside (or without) CLIP's contrastive loss.

The fusion module runs the text tower's token features through blocks of self-attention, cross-attention
to the image tower's tokens and an MLP (CoCa's decoder block, bidirectional here), and a linear head on the
first (pooled) text token says match / no match; no text token attends to padding. Each step scores the B
matching pairs and 2B mined non-matching ones: every image with another caption and every caption with
another image, drawn by softmax of the contrastive similarities (ALBEF; `negatives: hardest` takes the most
similar), never a caption identical token for token to the positive (`zir.losses.itm`).

`match_scores(image_tokens, text_tokens, ids)` gives the matching logit for re-ranking retrieval's top-k
(`zir.eval.rerank`). With `contrastive_weight: 0` the objective adds only the ITM term, so it can sit beside
a `clip` objective in a unified run; it still mines from its own projections, which that leaves untrained
(random projections of the towers' pooled features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.losses.itm import hardest_negatives, itm_loss, same_tokens, sampled_negatives
from zir.objectives.base import Loss, register_objective
from zir.objectives.clip import CLIP, tower_width
from zir.objectives.coca import DecoderBlock

NEGATIVES = ("sampled", "hardest")


class FusionEncoder(nn.Module):
    """(B, L, D) text tokens attending to (B, M, E) image tokens -> (B, 2) match logits from token 0."""

    def __init__(self, dim: int, image_dim: int, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        self.memory_norm = nn.LayerNorm(image_dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, image_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, text: torch.Tensor, image: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """`padding` (B, L) bool marks text tokens no token may attend to (padding); token 0 never is."""
        if padding is None:  # bidirectional over every token
            keys = torch.ones(text.shape[1], text.shape[1], dtype=torch.bool, device=text.device)
        else:
            keys = ~padding[:, None, None, :]  # (B, 1, 1, L): broadcast over heads and queries
        memory = self.memory_norm(image)
        for block in self.blocks:
            text = block(text, memory, keys)
        return self.head(self.norm(text[:, 0]))


class ITM(CLIP):
    """CLIP's contrastive loss (weight `contrastive_weight`) plus `itm_weight` x the ITM loss on mined negatives."""

    name = "itm"

    def __init__(self, towers: dict[str, nn.Module], tower: str = "image", text_tower: str = "text",
                 image_view: str | None = None, text_view: str = "text_0", embed_dim: int | None = None,
                 temperature: float = 0.07, contrastive_weight: float = 1.0, itm_weight: float = 1.0,
                 fusion_depth: int = 2, fusion_heads: int = 4, negatives: str = "sampled",
                 negative_temperature: float | None = None, gather_distributed: bool = True) -> None:
        """ITM over the image and text towers' tokens; the fusion is as wide as the text tower's tokens.
        `negatives`: "sampled" (ALBEF: drawn by softmax of the similarities) or "hardest"."""
        super().__init__(towers, tower, text_tower, image_view, text_view, embed_dim, 1.0, temperature,
                         gather_distributed=gather_distributed)
        self.contrastive_weight, self.itm_weight = float(contrastive_weight), float(itm_weight)
        if negatives not in NEGATIVES:
            raise ConfigError(f"itm negatives={negatives!r}: expected one of {', '.join(NEGATIVES)}")
        self.negatives = negatives
        if negative_temperature is not None and not float(negative_temperature) > 0:
            raise ConfigError(f"itm negative_temperature={negative_temperature!r}: expected a number > 0 (or null: "
                              "the contrastive temperature)")
        self.negative_temperature = None if negative_temperature is None else float(negative_temperature)
        self.fusion = FusionEncoder(tower_width(self.text_tower), tower_width(self.tower), fusion_depth, fusion_heads)

    def negative_scale(self) -> float:
        """1 / the sampling temperature: `negative_temperature`, else the contrastive loss's own."""
        if self.negative_temperature is not None:
            return 1.0 / self.negative_temperature
        return float(self.loss.scale.detach())

    def padding(self, ids: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L) token ids -> (B, 1 + L) bool padding mask of the text tower's tokens (its pooled token first)."""
        if ids is None:
            return None
        pad = ids == self.text_tower.pad_id
        return torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)

    def match_scores(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                     ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, E) image tokens and (B, 1 + L, D) text tokens of B pairs -> (B,) match logits (higher: matches);
        with the (B, L) token `ids`, padding is masked in the fusion."""
        logits = self.fusion(text_tokens, image_tokens, self.padding(ids))
        return logits[:, 1] - logits[:, 0]

    def forward(self, batch, features) -> Loss:
        """Contrastive loss (unless its weight is 0) + ITM loss on the B pairs and 2B hardest non-pairs."""
        f_img, f_txt = self.forwards()
        image_tokens, text_tokens = features[f_img], features[f_txt]
        image, text = self.embeddings(features)
        metrics = {}
        total = image.new_zeros(())
        if self.contrastive_weight:
            contrastive = super().forward(batch, features)
            total = total + self.contrastive_weight * contrastive.value
            metrics.update(contrastive_loss=float(contrastive.value.detach()), **contrastive.metrics)
        b = image.shape[0]
        if b >= 2:
            sim = F.normalize(image.detach(), dim=-1) @ F.normalize(text.detach(), dim=-1).T
            ids = batch.tokens.get(self.text_view) if getattr(batch, "tokens", None) else None
            same = same_tokens(ids) if ids is not None and ids.shape[0] == b else None
            if self.negatives == "hardest":
                hard_text, hard_image = hardest_negatives(sim, same)
            else:
                hard_text, hard_image = sampled_negatives(sim, same, self.negative_scale())
            texts = torch.cat([text_tokens, text_tokens[hard_text], text_tokens])
            images = torch.cat([image_tokens, image_tokens, image_tokens[hard_image]])
            padding = self.padding(ids) if same is not None else None
            if padding is not None:
                padding = torch.cat([padding, padding[hard_text], padding])
            logits = self.fusion(texts, images, padding)
            match = itm_loss(logits, b)
            total = total + self.itm_weight * match
            with torch.no_grad():
                labels = torch.zeros(3 * b, dtype=torch.long, device=logits.device)
                labels[:b] = 1
                metrics.update(itm_loss=float(match.detach()), itm_acc=float((logits.argmax(-1) == labels).float().mean()))
        return Loss(total, metrics)


register_objective("itm", ITM)
