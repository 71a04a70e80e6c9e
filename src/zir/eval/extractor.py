"""One model's features for evaluation: its image (or audio) tower's pooled features and its caption embeddings per
split, extracted once (kept in memory for the tasks of one evaluation, and on disk in RUN/features/ for the next)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from zir.eval.features import extract_features
from zir.eval.splits import EvalData

__all__ = ["CAPTIONS_PER_IMAGE", "FeatureExtractor"]

CAPTIONS_PER_IMAGE = 5  # Flickr and shapes both have five; retrieval reads this many per image


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-")[:40] or "data"


class FeatureExtractor:
    """Pooled features of one tower (images or spectrograms) and caption embeddings, cached per split in memory
    and in `cache_dir`."""

    def __init__(self, tower: tuple[str, nn.Module], tag: str, cache_dir: Path, data: EvalData, plan: tuple[dict, str],
                 limit, batch_size: int, tokenizer) -> None:
        """`tower` is (name, module); `tag` names the weights (step2, step2-teacher, init-seed0) in cache keys;
        `plan` is the view plan the inputs are made with and the view the tower reads (`extraction_plan()`)."""
        self.tower_name, self.tower = tower
        self.tag, self.cache_dir, self.data = tag, cache_dir, data
        (self.plan, self.view), self.limit, self.batch_size, self.tokenizer = plan, limit, batch_size, tokenizer
        shown = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.plan.items()}
        if shown.get("global") == 1 and set(shown) == {"global", "pipeline", "size", "mean", "std"}:
            shown = {"size": shown["size"], "mean": shown["mean"], "std": shown["std"]}  # the older image key
        digest = json.dumps({"data": data.name, "opts": data.options, "limit": limit, **shown}, sort_keys=True,
                            default=str)
        self.hash = hashlib.sha1(digest.encode()).hexdigest()[:8]
        self._pooled: dict[str, tuple] = {}
        self._maps: dict[str, torch.Tensor] = {}

    def key(self, split: str, kind: str) -> str:
        """The cache key of one split's features: weights tag, dataset, split, kind and a hash of the rest."""
        return f"{self.tag}-{_slug(self.data.name)}-{_slug(split)}-{kind}-{self.hash}"

    def _batches(self, source, text: bool = False) -> Iterator:
        from zir.data import make_loader

        plan = dict(self.plan)
        if text:
            plan["text"] = CAPTIONS_PER_IMAGE
        loader = make_loader(source, plan, self.batch_size, shuffle=False, drop_last=False,
                             tokenizer=self.tokenizer if text else None)
        seen = 0
        for batch in loader:
            if self.limit is not None and seen >= self.limit:
                return
            take = len(batch) if self.limit is None else min(len(batch), self.limit - seen)
            seen += take
            if text:  # (B, T, L) -> (B * T, L): caption j describes image j // T
                ids = torch.stack([batch.tokens[f"text_{t}"] for t in range(CAPTIONS_PER_IMAGE)], dim=1)
                yield ids[:take].reshape(-1, ids.shape[-1])
            else:
                yield batch.views[self.view][:take], batch.labels[:take]

    def pooled(self, split: str, source) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D) pooled tower features and (N,) labels (-1 where unknown) of one split; extracted once."""
        if split not in self._pooled:
            tower = self.tower

            def encode(x: torch.Tensor) -> torch.Tensor:
                return tower.pool(tower.forward_tokens(x))

            with torch.no_grad():
                self._pooled[split] = extract_features(encode, self._batches(source), cache_dir=self.cache_dir,
                                                       key=self.key(split, "pooled"))
        return self._pooled[split]

    def token_maps(self, split: str, source) -> torch.Tensor:
        """(N, D, rows, cols) patch tokens of one split's images, prefix tokens left out (dense probes); kept in
        memory for this evaluation only."""
        if split not in self._maps:
            tower, prefix = self.tower, self.tower.num_prefix_tokens
            stride = tower.feature_stride
            parts = []
            with torch.no_grad():
                for x, _ in self._batches(source):
                    tokens = tower.forward_tokens(x)[:, prefix:].float()
                    rows, cols = x.shape[-2] // stride[0], x.shape[-1] // stride[1]
                    parts.append(tokens.transpose(1, 2).reshape(len(x), -1, rows, cols))
            self._maps[split] = torch.cat(parts) if parts else torch.zeros(0, tower.embed_dim, 1, 1)
        return self._maps[split]

    def captions(self, split: str, source, encode_text) -> torch.Tensor:
        """(N * 5, E) caption embeddings of one split through `encode_text` (token ids -> joint space)."""
        with torch.no_grad():
            feats, _ = extract_features(encode_text, self._batches(source, text=True), cache_dir=self.cache_dir,
                                        key=self.key(split, "captions"))
        return feats
