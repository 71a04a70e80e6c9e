"""CoCa (Yu et al., 2022): contrastive captioners, and `generate_captions` with greedy or beam search.

The causal text tower is CoCa's unimodal decoder: its end-of-text feature is the text embedding for the
contrastive loss. A multimodal decoder stacks blocks of causal self-attention, cross-attention to the
image tower's tokens and an MLP on the unimodal features of every position, and predicts the next token.
The loss is `contrastive_weight` x CLIP's loss + `caption_weight` x the next-token cross-entropy over real
(non-padding) tokens (`zir.losses.coca`); published weights 1 and 2. The caption loss reads image tokens, so
FLIP masking (`keep`) shortens the decoder's memory too.

`caption_fraction` < 1 runs the decoder on the first ceil(fraction x B) rows of the batch only (the loader
shuffles, so a fresh random subset each step), as SigLIP 2 decodes part of its batch: CoCa captions every
sample (fraction 1, the default). The contrastive term still reads the whole batch; the text tower still
encodes every caption, which that term needs. At CPU scale the one-layer decoder and its vocabulary head
cost about 0.4x a CLIP step, so a quarter of the batch saves about 0.3x of one (docs/benchmarks.md).

Token ids follow zir's tokenizers (pad 0, start 1, end 2); give other ids with `sot_id`/`eot_id`, or pass
the tokenizer to `generate_captions`, which reads them from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError, ShapeError
from zir.losses.coca import caption_loss
from zir.nn import Attention, Mlp, attend
from zir.objectives.base import DEFAULT_MASK, Loss, batch_fraction, first_rows, register_objective
from zir.objectives.clip import CLIP, tower_width


class CrossAttention(nn.Module):
    """Multi-head attention from (B, L, D) queries to (B, M, E) memory tokens."""

    def __init__(self, dim: int, memory_dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"decoder width {dim} must be divisible by its heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(memory_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, L, D) queries, (B, M, E) memory -> (B, L, D)."""
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(memory).reshape(b, memory.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out, _ = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to image tokens, MLP; each with a residual."""

    def __init__(self, dim: int, memory_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.cross = nn.LayerNorm(dim), CrossAttention(dim, memory_dim, num_heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """(B, L, D) text, (B, M, E) image memory, (L, L) bool causal mask -> (B, L, D)."""
        x = x + self.attn(self.norm1(x), causal)
        x = x + self.cross(self.norm2(x), memory)
        return x + self.mlp(self.norm3(x))


class MultimodalDecoder(nn.Module):
    """CoCa's multimodal text decoder: (B, L, D) unimodal text features + image tokens -> (B, L, vocab) logits."""

    def __init__(self, dim: int, image_dim: int, vocab_size: int, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        self.memory_norm = nn.LayerNorm(image_dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, image_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def features(self, text: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) unimodal text features, (B, M, E) image tokens -> (B, L, D) features before the head."""
        length = text.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=text.device).tril()
        memory = self.memory_norm(image_tokens)
        for block in self.blocks:
            text = block(text, memory, causal)
        return text

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) decoder features -> (..., vocab) next-token logits (per position: any subset of them)."""
        return self.head(self.norm(features))

    def forward(self, text: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) unimodal text features, (B, M, E) image tokens -> (B, L, vocab) next-token logits."""
        return self.logits(self.features(text, image_tokens))


class CoCa(CLIP):
    """Contrastive loss between image and text embeddings plus a captioning loss from a multimodal decoder."""

    name = "coca"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        text_tower: str = "text",
        image_view: str | None = None,
        text_view: str = "text_0",
        embed_dim: int | None = None,
        keep: float = 1.0,
        temperature: float = 0.07,
        contrastive_weight: float = 1.0,
        caption_weight: float = 2.0,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        sot_id: int = 1,
        eot_id: int = 2,
        gather_distributed: bool = True,
        mask_name: str = DEFAULT_MASK,
        keep_from: float = 0.0,
        caption_fraction: float = 1.0,
    ) -> None:
        """CoCa over a causal text tower; the decoder is as wide as the text tower's token features and
        captions the first `caption_fraction` of each batch."""
        super().__init__(towers, tower, text_tower, image_view, text_view, embed_dim, keep, temperature,
                         gather_distributed=gather_distributed, mask_name=mask_name,
                         keep_from=keep_from)
        text = self.text_tower
        if not (text.modality == "text" and text.causal):
            raise ConfigError(f"objective coca: text tower {text_tower!r} must be a causal TextTransformer "
                              "(CoCa's unimodal decoder), not a bidirectional encoder")
        self.contrastive_weight, self.caption_weight = float(contrastive_weight), float(caption_weight)
        self.caption_fraction = batch_fraction(caption_fraction, "caption_fraction")
        self.sot_id, self.eot_id, self.pad_id = int(sot_id), int(eot_id), int(text.pad_id)
        self.decoder = MultimodalDecoder(text.width, tower_width(self.tower), text.vocab_size, decoder_depth, decoder_heads)

    def caption_loss(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of (B, L, V) logits against ids shifted by one, padding ignored."""
        return caption_loss(logits, ids, self.pad_id)

    def caption_rows(self, batch_size: int) -> int:
        """How many rows of a batch of `batch_size` the decoder captions: ceil(caption_fraction x B), at least 1."""
        return first_rows(self.caption_fraction, batch_size)

    def forward(self, batch, features) -> Loss:
        """Weighted contrastive + captioning loss; metrics: both parts, accuracy, next-token accuracy."""
        f_img, f_txt = self.forwards()
        image_tokens, text_tokens = features[f_img], features[f_txt]
        # with contrastive_weight 0 (a recipe whose CLIP objective carries the contrastive term) skip it entirely
        contrastive = super().forward(batch, features) if self.contrastive_weight else None
        ids = batch.tokens[self.text_view]
        rows = self.caption_rows(len(ids))  # contiguous rows: views of the cached features, no copy
        ids, image_tokens, text_tokens = ids[:rows], image_tokens[:rows], text_tokens[:rows]
        hidden = self.decoder.features(text_tokens[:, self.text_tower.num_prefix_tokens:], image_tokens)
        # the head and the cross-entropy only where a real token follows: the last position and those before
        # padding predict nothing the loss counts (about half of them on short captions); the loss is the
        # same as `caption_loss` over all logits
        targets = ids[:, 1:]
        real = targets != self.pad_id
        logits = self.decoder.logits(hidden[:, :-1][real])  # (N, vocab), N real next tokens
        caption = F.cross_entropy(logits.float(), targets[real]) if len(logits) else hidden.sum() * 0.0
        with torch.no_grad():
            token_acc = (logits.argmax(-1) == targets[real]).float().mean() if len(logits) else torch.zeros(())
        metrics = {"caption_loss": float(caption.detach()), "token_acc": float(token_acc)}
        if contrastive is None:
            return Loss(self.caption_weight * caption, metrics)
        metrics.update(contrastive_loss=float(contrastive.value.detach()), **contrastive.metrics)
        return Loss(self.contrastive_weight * contrastive.value + self.caption_weight * caption, metrics)

    # -- generation -------------------------------------------------------------------------------------
    def next_logprobs(self, ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, t) prefixes and (B, M, E) image tokens -> (B, V) log-probabilities of the next token."""
        text = self.text_tower.forward_positions(ids)
        return self.decoder(text, image_tokens)[:, -1].float().log_softmax(-1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_length: int | None = None, beams: int = 1,
                 length_penalty: float = 0.6) -> torch.Tensor:
        """Images (B, 3, H, W) -> (B, L) token ids from the start token to the end token, then padding.

        `beams=1` is greedy decoding; more beams keep the best `beams` prefixes by summed log-probability
        and return the finished caption with the best score / length ** length_penalty.
        """
        max_length = min(max_length or self.text_tower.context_length, self.text_tower.context_length)
        if max_length < 2 or beams < 1:
            raise ConfigError(f"generate: max_length={max_length} must be >= 2 and beams={beams} >= 1")
        image_tokens = self.tower.forward_tokens(images)
        if beams == 1:
            return self._greedy(image_tokens, max_length)
        out = torch.full((len(images), max_length), self.pad_id, dtype=torch.long, device=images.device)
        for i in range(len(images)):  # one image at a time, its beams as the batch
            row = self._beam(image_tokens[i:i + 1], max_length, beams, length_penalty)
            out[i, :len(row)] = row
        return out

    def _greedy(self, image_tokens: torch.Tensor, max_length: int) -> torch.Tensor:
        b = image_tokens.shape[0]
        ids = torch.full((b, 1), self.sot_id, dtype=torch.long, device=image_tokens.device)
        done = torch.zeros(b, dtype=torch.bool, device=ids.device)
        while ids.shape[1] < max_length and not done.all():
            nxt = self.next_logprobs(ids, image_tokens).argmax(-1)
            if ids.shape[1] == max_length - 1:
                nxt = torch.full_like(nxt, self.eot_id)  # a caption always ends with the end token
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == self.eot_id
        return F.pad(ids, (0, max_length - ids.shape[1]), value=self.pad_id)

    def _beam(self, image_tokens: torch.Tensor, max_length: int, beams: int, alpha: float) -> torch.Tensor:
        device = image_tokens.device
        alive = torch.full((1, 1), self.sot_id, dtype=torch.long, device=device)
        scores = torch.zeros(1, device=device)
        finished: list[tuple[float, torch.Tensor]] = []
        while alive.shape[1] < max_length and alive.shape[0] > 0:
            logp = self.next_logprobs(alive, image_tokens.expand(alive.shape[0], -1, -1))
            if alive.shape[1] == max_length - 1:  # last position: only the end token may follow
                forced = torch.full_like(logp, float("-inf"))
                forced[:, self.eot_id] = logp[:, self.eot_id]
                logp = forced
            total = (scores[:, None] + logp).flatten()
            top = total.topk(min(2 * beams, total.numel()))
            keep_rows, keep_scores = [], []
            for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                row, token = divmod(flat, logp.shape[1])
                seq = torch.cat([alive[row], torch.tensor([token], device=device)])
                if token == self.eot_id:
                    if rank < beams:  # an ending counts only when it is among the best `beams` extensions
                        finished.append((score / (len(seq) - 1) ** alpha, seq))
                elif len(keep_rows) < beams and score > float("-inf"):
                    keep_rows.append(seq)
                    keep_scores.append(score)
                if len(keep_rows) == beams:
                    break
            if len(finished) >= beams or not keep_rows:
                break
            alive, scores = torch.stack(keep_rows), torch.tensor(keep_scores, device=device)
        if not finished:  # nothing ended: close the best alive prefix
            finished.append((0.0, torch.cat([alive[0], torch.tensor([self.eot_id], device=device)])))
        return max(finished, key=lambda f: f[0])[1]


def _find_coca(model: nn.Module) -> CoCa:
    if isinstance(model, CoCa):
        return model
    for module in model.modules():
        if isinstance(module, CoCa):
            return module
    raise ConfigError("generate_captions: the model has no coca objective; train one with objectives: {coca: {}}")


@torch.no_grad()
def generate_captions(model: nn.Module, images: torch.Tensor, tokenizer=None, *, beams: int = 1,
                      max_length: int | None = None, length_penalty: float = 0.6) -> list[str] | torch.Tensor:
    """Captions for images (B, 3, H, W) from a model with a CoCa objective: strings with `tokenizer`, else (B, L) ids.

    Greedy with `beams=1`, beam search otherwise; whole images are encoded (no token masking).
    """
    coca = _find_coca(model)
    if images.ndim != 4:
        raise ShapeError(f"generate_captions expects images (B, 3, H, W); got {tuple(images.shape)}")
    if tokenizer is not None and tokenizer.sot_id is None:
        raise ConfigError("generate_captions: the tokenizer has no start token; CoCa decodes from one")
    was_training = model.training
    model.eval()
    saved = coca.sot_id, coca.eot_id, coca.pad_id
    try:
        if tokenizer is not None:
            coca.sot_id, coca.eot_id, coca.pad_id = int(tokenizer.sot_id), int(tokenizer.eot_id), int(tokenizer.pad_id)
        ids = coca.generate(images, max_length, beams, length_penalty)
    finally:
        coca.sot_id, coca.eot_id, coca.pad_id = saved
        model.train(was_training)
    return tokenizer.decode(ids) if tokenizer is not None else ids


register_objective("coca", CoCa)
