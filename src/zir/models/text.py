"""CLIP's causal text tower (Radford et al., 2021) with zir's tower interface.

Token layout of `forward_tokens(ids)`: one prefix token, the feature at the end-of-text position, then the
features of all L positions. The prefix makes `pool(tokens)` work from the features alone, like a ViT's
CLS token, so objectives read text and image features the same way.

The end-of-text position is the *last non-padding token* of each row (`pad_id`), which is the end token for
zir's tokenizers and for CLIP's (CLIP itself takes the argmax id, which only works where the end token has
the highest id). A tower given `eot_id` pools at the first occurrence of that id instead, for tokenizers
that pad with their end token.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError, ShapeError
from zir.models.tower import TextTowerMembers
from zir.nn import Block, activation, check_attention_impl


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool mask, True where position i may attend to position j (j <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def eot_positions(ids: torch.Tensor, pad_id: int = 0, eot_id: int | None = None) -> torch.Tensor:
    """(B, L) token ids -> (B,) index of each row's end-of-text token (see the module docstring)."""
    if eot_id is not None:
        hit = ids == eot_id
        first = hit.int().argmax(dim=1)
        return torch.where(hit.any(dim=1), first, ids.shape[1] - 1)
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.where(ids != pad_id, positions, 0).amax(dim=1)


class TextTransformer(TextTowerMembers, nn.Module):
    """Token + position embeddings, causal pre-norm blocks, final norm; pooled at end-of-text and projected."""

    num_prefix_tokens = 1

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        embed_dim: int | None = 512,
        pad_id: int = 0,
        eot_id: int | None = None,
        causal: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
        act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        proj_bias: bool = False,
        pool_last: bool = False,
    ) -> None:
        """Build the tower; `embed_dim=None` pools without a projection (output width = `width`); `act`: the MLP
        activation, 'gelu', 'quick_gelu' (OpenAI CLIP's) or 'gelu_tanh' (SigLIP's). SigLIP's text tower:
        `causal=False`, `proj_bias=True`, `pool_last=True` (the last position, padding or not), eps 1e-6."""
        super().__init__()
        if num_classes:
            raise ConfigError(f"text towers have no classifier head; num_classes must be 0, got {num_classes}")
        if vocab_size < 2 or context_length < 2:
            raise ConfigError(f"text tower vocab_size={vocab_size}, context_length={context_length}: expected >= 2")
        self.vocab_size, self.context_length = vocab_size, context_length
        self.width = self.num_features = width
        self.embed_dim = embed_dim or width
        self.pad_id, self.eot_id, self.causal, self.pool_last = pad_id, eot_id, causal, pool_last
        self.grad_checkpointing = False
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, drop=drop_rate, drop_path=rates[i], act_layer=activation(act),
                  norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps))
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.proj = nn.Linear(width, embed_dim, bias=proj_bias) if embed_dim else nn.Identity()
        self.register_buffer("attn_mask", causal_mask(context_length), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """CLIP's initialisation scales: embeddings 0.02/0.01, projection width^-0.5, linears 0.02."""
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        if isinstance(self.proj, nn.Linear):
            nn.init.normal_(self.proj.weight, std=self.width ** -0.5)
            if self.proj.bias is not None:
                nn.init.zeros_(self.proj.bias)

    def _check(self, ids: torch.Tensor) -> None:
        if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ShapeError(f"text tower expects (B, L) integer token ids; got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.context_length:
            raise ShapeError(f"text of {ids.shape[1]} tokens exceeds the tower's context_length={self.context_length}")
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise ShapeError(f"token id {int(ids.max())} is outside the tower's vocabulary of {self.vocab_size}; "
                             "set vocab_size to the tokenizer's")

    def forward_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, width) normalised features of every position."""
        self._check(ids)
        length = ids.shape[1]
        x = self.pos_drop(self.token_embedding(ids) + self.pos_embed[:, :length])
        mask = self.attn_mask[:length, :length] if self.causal else None
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return self.norm(x)

    def forward_tokens(
        self, ids: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, 1 + L, width): the end-of-text feature, then every position's feature."""
        self.refuse_patches(keep, mask)
        x = self.forward_positions(ids)
        if self.pool_last:
            at = torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        else:
            at = eot_positions(ids, self.pad_id, self.eot_id)
        pooled = x[torch.arange(x.shape[0], device=x.device), at]
        return torch.cat([pooled[:, None], x], dim=1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, width) -> (B, embed_dim): the projected end-of-text feature."""
        return self.proj(tokens[:, 0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, embed_dim) text embeddings."""
        return self.pool(self.forward_tokens(ids))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def set_attention_impl(self, impl: str) -> None:
        """Choose the attention kernel of every block: 'auto', 'sdpa' or 'math'."""
        check_attention_impl(impl)
        for block in self.blocks:
            block.attn.impl = impl

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay should skip (embeddings)."""
        return {"pos_embed", "token_embedding.weight"}

    def layer_index(self, param_name: str) -> int:
        """Depth for layer-wise lr decay: 0 the embeddings, i + 1 block i, depth + 1 the rest."""
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        if param_name.startswith(("token_embedding", "pos_embed")):
            return 0
        return len(self.blocks) + 1
