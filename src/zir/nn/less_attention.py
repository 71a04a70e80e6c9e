"""Less attention (LaViT: Zhang et al., CVPR 2024, "You Only Need Less Attention at Each Stage in Vision
Transformers"): most blocks reuse an earlier block's attention scores instead of computing their own.

Deep ViTs' attention maps change little from one layer to the next ("attention saturation"), so LaViT
computes softmax attention (queries, keys, QK^T) only in the first blocks of each stage and, in every
later block of the stage, derives the attention from the previous block's matrix with a learned linear
transformation: the paper's less-attention layer is A_l = Psi(Theta(A_{l-1})^T)^T, output
softmax(A_l) V_l, with Psi and Theta linear maps over the token axes (N x N). A reused block keeps its
value and output projections; it has no query or key projection and no QK^T product.

What zir does, and where it chooses (the paper's text was read only through a summary here):

- Scores, not probabilities, are handed on. The full-attention block passes its pre-softmax scores
  QK^T / sqrt(d); each reused block transforms the scores it receives, takes the softmax, and passes its
  transformed scores on (A_l from A_{l-1}, a chain, as in the paper). With the transformation at identity
  a reused block attends exactly as the block before it did.
- Two transformations, both initialised to identity:
  `"heads"` (zir's default): a learned H x H head-mixing matrix, A_l[h] = sum_g M[h, g] A_{l-1}[g]. It costs
  H^2 N^2 multiply-adds and H^2 parameters, works at any number of tokens, and so with `keep` token
  dropping and other input sizes.
  `"tokens"` (the paper's form): A_l = Psi A_{l-1} Theta^T with Psi, Theta in R^{N x N} for the N tokens of
  the native grid (prefix tokens included). With `keep`, the rows and columns of the kept positions are
  used. It needs the native grid, adds 2 N^2 parameters per block and costs 2 H N^3 multiply-adds, which in
  a plain ViT is more than the N^2 D of the QK^T it replaces once N > D / (2H) (LaViT is a
  hierarchical ViT whose later stages have few tokens, where the maps are cheaper).
- The full-attention blocks take the explicit matmul-softmax path (their scores must exist as a tensor),
  not a fused kernel. Attention masks are not supported in these blocks (the ViT tower uses none).
- LaViT's residual-based attention downsampling carries a stage's last attention into the next, coarser
  stage; a plain ViT has one resolution, so it does not apply here. `diagonality_preserving_loss` is the
  paper's auxiliary loss on transformed attention, written from our reading of it (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError, ShapeError
from zir.nn.attention import Attention
from zir.nn.block import Block

SCORE_TRANSFORMS = ("heads", "tokens")


def check_score_transform(transform: str) -> str:
    """Validate a less-attention score transformation name."""
    if transform not in SCORE_TRANSFORMS:
        raise ConfigError(f"less_attention_transform must be one of {', '.join(SCORE_TRANSFORMS)}; got {transform!r}")
    return transform


def less_attention_schedule(depth: int, full: int, stages: int = 1) -> list[bool]:
    """Which of `depth` blocks reuse scores: split them into `stages` consecutive groups (as equal as
    possible), and in each group the first `full` blocks compute attention and the rest reuse (True)."""
    if not 1 <= stages <= depth:
        raise ConfigError(f"less_attention_stages must be between 1 and depth={depth}; got {stages}")
    bounds = [round(s * depth / stages) for s in range(stages + 1)]
    shortest = min(b - a for a, b in zip(bounds, bounds[1:]))
    if not 1 <= full < shortest:
        raise ConfigError(
            f"less_attention must be between 1 and {shortest - 1} (full-attention blocks per stage of "
            f"{shortest}+ blocks, so that some blocks reuse); got {full}"
        )
    return [i - start >= full for start, stop in zip(bounds, bounds[1:]) for i in range(start, stop)]


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores (B, H, N, M) = q k^T / sqrt(d) of (B, H, N, d) queries and (B, H, M, d) keys."""
    return (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)


def _attend_with(scores: torch.Tensor, v: torch.Tensor, drop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scores) @ v with attention dropout; returns (out (B, H, N, d), weights before dropout)."""
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, drop) if drop > 0 else weights
    return dropped @ v, weights


class ScoredAttention(Attention):
    """Softmax attention that also hands on its pre-softmax scores, for the less-attention blocks after it."""

    def forward_scores(
        self, x: torch.Tensor, scores: torch.Tensor | None = None, positions: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, N, D) -> (out (B, N, D), its scores (B, H, N, N), weights or None); incoming scores are unused."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = attention_scores(self.q_norm(q), self.k_norm(k))
        out, weights = _attend_with(scores, v, self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, D)))
        return out, scores, (weights if need_weights else None)


class LessAttention(nn.Module):
    """LaViT's less-attention layer: attention = softmax(T(previous scores)) on this layer's values.

    Parameters: a value projection, the output projection and the transformation T (identity at
    initialisation); no query or key projection. See the module docstring for the two transformations.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        transform: str = "heads",
        num_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.transform = check_score_transform(transform)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        if transform == "heads":
            self.head_mix = nn.Parameter(torch.eye(num_heads))
        else:
            if not num_tokens or num_tokens < 1:
                raise ConfigError("less_attention_transform='tokens' needs num_tokens, the native token count")
            self.num_tokens = num_tokens
            self.token_rows = nn.Parameter(torch.eye(num_tokens))  # Psi: mixes the query (row) index
            self.token_cols = nn.Parameter(torch.eye(num_tokens))  # Theta: mixes the key (column) index
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.impl = "math"  # for `set_attention_impl`; this layer has one path

    def transform_scores(self, scores: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, N, N) scores -> transformed scores; `positions` (B, N) index the token maps' rows (with `keep`)."""
        B, H, N, _ = scores.shape
        if self.transform == "heads":
            # einsum, not a broadcast matmul: torch's (H, H) @ (B, H, N*N) path copies the scores (2x slower on CPU)
            return torch.einsum("hg,bgij->bhij", self.head_mix.to(scores.dtype), scores)
        rows, cols = self.token_rows.to(scores.dtype), self.token_cols.to(scores.dtype)
        if positions is None:
            if N != self.num_tokens:
                raise ShapeError(
                    f"less attention's token transform is built for {self.num_tokens} tokens (the native grid "
                    f"and prefix); got {N}. Use the native image size, or less_attention_transform='heads'"
                )
            return rows @ scores @ cols.transpose(0, 1)
        if positions.shape != (B, N):
            raise ShapeError(f"positions must be (B={B}, N={N}); got {tuple(positions.shape)}")
        rows = rows[positions[:, :, None], positions[:, None, :]].unsqueeze(1)  # (B, 1, N, N)
        cols = cols[positions[:, :, None], positions[:, None, :]].unsqueeze(1)
        return rows @ scores @ cols.transpose(-2, -1)

    def forward_scores(
        self, x: torch.Tensor, scores: torch.Tensor | None, positions: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, N, D) tokens and the previous layer's (B, H, N, N) scores -> (out, new scores, weights or None)."""
        B, N, D = x.shape
        if scores is None:
            raise ConfigError("a less-attention layer needs an earlier layer's scores; the first block must attend")
        if scores.shape != (B, self.num_heads, N, N):
            raise ShapeError(f"scores must be (B={B}, H={self.num_heads}, N={N}, N={N}); got {tuple(scores.shape)}")
        scores = self.transform_scores(scores, positions)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        out, weights = _attend_with(scores, v, self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, D)))
        return out, scores, (weights if need_weights else None)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, need_weights: bool = False) -> torch.Tensor:
        """Not callable alone: the layer needs the scores its tower hands on (`forward_scores`)."""
        raise ConfigError(
            "a less-attention block reuses the previous block's scores, so it runs only inside its tower's "
            "forward (forward_tokens / forward_blocks), not as a standalone block"
        )


class ScoreSharingBlock(Block):
    """The pre-norm block whose attention hands its scores on (`reuse=False`) or reuses them (`reuse=True`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        reuse: bool = False,
        transform: str = "heads",
        num_tokens: int | None = None,
    ) -> None:
        """`Block`'s arguments, plus `reuse` and the reused layer's `transform` and `num_tokens` (`LessAttention`)."""
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, qk_norm, init_values, drop, attn_drop, drop_path,
                         act_layer, norm_layer)
        self.reuse = reuse
        if reuse:
            self.attn = LessAttention(dim, num_heads, qkv_bias, attn_drop, drop, transform, num_tokens)
        else:
            self.attn = ScoredAttention(dim, num_heads, qkv_bias, qk_norm, attn_drop, drop, norm_layer)

    def forward_scores(
        self, x: torch.Tensor, scores: torch.Tensor | None, positions: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, N, D) tokens and the previous block's scores -> (tokens, this block's scores, weights or None)."""
        out, scores, weights = self.attn.forward_scores(self.norm1(x), scores, positions, need_weights)
        x = x + self.drop_path1(self.ls1(out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, scores, weights


def run_score_sharing(
    blocks: Sequence[ScoreSharingBlock], x: torch.Tensor, positions: torch.Tensor | None = None,
    need_weights: bool = False, checkpointing: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run blocks that hand scores on: (B, N, D) -> (B, N, D) and, with `need_weights`, each block's weights."""
    scores, maps = None, []
    for block in blocks:
        if checkpointing and torch.is_grad_enabled() and not need_weights:
            x, scores, _ = checkpoint(block.forward_scores, x, scores, positions, use_reentrant=False)
        else:
            x, scores, weights = block.forward_scores(x, scores, positions, need_weights)
            if need_weights:
                maps.append(weights)
    return x, maps


def token_positions(num_prefix: int, keep: torch.Tensor | None) -> torch.Tensor | None:
    """(B, P + K) indices of the encoded tokens among the native prefix + patch tokens, or None without `keep`."""
    if keep is None:
        return None
    prefix = torch.arange(num_prefix, device=keep.device).expand(keep.shape[0], -1)
    return torch.cat([prefix, keep.long() + num_prefix], dim=1)


def diagonality_preserving_loss(weights: torch.Tensor) -> torch.Tensor:
    """LaViT's diagonality-preserving loss on (B, H, N, N) attention weights, averaged over B and H.

    Per matrix A: sum_ij |A_ij - A_ji| + sum_i |(N - 1) A_ii - sum_{j != i} A_ij|: a symmetry term (token
    relations as a similarity, as in the un-transformed QK^T of one set of tokens) and a diagonal term
    weighing each token's attention to itself against the mean of its attention to the others. This is our
    reconstruction of the paper's loss (added to the task loss for the transformed attention of the reused
    layers); we could not check its exact weighting against the paper's text, so treat it as an option.
    """
    if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ShapeError(f"attention weights must be (B, H, N, N); got {tuple(weights.shape)}")
    n = weights.shape[-1]
    symmetry = (weights - weights.transpose(-2, -1)).abs().sum(dim=(-2, -1))
    diag = weights.diagonal(dim1=-2, dim2=-1)
    off_diagonal = weights.sum(dim=-1) - diag
    diagonal = ((n - 1) * diag - off_diagonal).abs().sum(dim=-1)
    return (symmetry + diagonal).mean()
