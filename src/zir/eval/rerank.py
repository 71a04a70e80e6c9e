"""Retrieval re-ranked by image-text matching: each query's top-k by contrastive similarity, reordered by the
match scores of a run's `itm` objective (its cross-attention fusion over image and text tokens).

A candidate's score is its ITM logit (match against no match) plus its contrastive logit (the objective's own
scale x cosine), as BLIP's evaluation adds the two: the fusion corrects the similarity's order rather than
replacing it, so what the contrastive ranking knew and the fusion did not learn is kept. Measured on shapes
(docs/adapt.md) the sum raised R@1 both ways in all eight runs; the ITM logit alone (ALBEF's) was uneven.
Re-ranking only permutes each query's top-k set, so R@k is unchanged by construction and R@1 (and R@K < k) is
where it can help. Metrics come back as `reranked_i2t_R@1` and so on, beside the plain ones, and
`reranked_itm_only_i2t_R@1` / `..._t2i_R@1` for the ITM logit alone (the same fusion scores, ranked without the
similarity).
"""

from __future__ import annotations

import torch

from zir.eval.retrieval import _summary
from zir.eval.run_loading import EvalError
from zir.losses.itm import reranked_ranks
from zir.objectives.itm import ITM


def check_rerank(k) -> int:
    """`--rerank K`: 0 (off) or a positive number of candidates, else a one-line EvalError."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise EvalError(f"--rerank {k!r}: expected the number of top candidates to re-rank (a positive integer; 0 = off)")
    return k


def itm_objective(model) -> ITM | None:
    """The model's `itm` objective, or None."""
    return next((o for o in getattr(model, "objectives", {}).values() if isinstance(o, ITM)), None)


@torch.no_grad()
def reranked_retrieval(ctx, image: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor) -> dict:
    """Re-ranked recall both ways for (N, E) image and (T, E) caption embeddings, caption t describing image owner[t]."""
    itm = itm_objective(ctx.model)
    if itm is None:
        return {"rerank_skipped": "the model has no itm objective (train one: objectives: {itm: {}})"}
    was_training = itm.training
    itm.eval()
    features, data = ctx.features, ctx.data
    image_tokens = torch.cat([features.tower.forward_tokens(x) for x, _ in features._batches(data.test)])
    text_tower = itm.text_tower
    ids = torch.cat(list(features._batches(data.test, text=True)))[: texts.shape[0]]
    text_tokens = torch.cat([text_tower.forward_tokens(part) for part in ids.split(features.batch_size)])
    image_tokens = image_tokens[: image.shape[0]]
    sim = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).T
    k = ctx.rerank

    def text_scores(q: int, cands: torch.Tensor) -> torch.Tensor:
        return itm.match_scores(image_tokens[q].expand(len(cands), -1, -1), text_tokens[cands], ids[cands]).float()

    def image_scores(q: int, cands: torch.Tensor) -> torch.Tensor:
        return itm.match_scores(image_tokens[cands], text_tokens[q].expand(len(cands), -1, -1),
                                ids[q].expand(len(cands), -1)).float()

    own = owner.view(1, -1) == torch.arange(image.shape[0]).view(-1, 1)  # (N, T)
    scale = float(itm.loss.scale.detach())
    text_itm, image_itm = once_per_query(text_scores), once_per_query(image_scores)
    out = {}
    directions = ((sim, text_itm, own, "i2t"), (sim.T.contiguous(), image_itm, own.T.contiguous(), "t2i"))
    for sim_q, itm_scores, correct, direction in directions:
        fused = reranked_ranks(sim_q, k, lambda q, cands: itm_scores(q, cands) + scale * sim_q[q, cands].float(), correct)
        alone = reranked_ranks(sim_q, k, itm_scores, correct)
        out.update(_summary(fused, f"reranked_{direction}", (1, 5, 10)))
        key = f"reranked_itm_only_{direction}_R@1"
        out[key] = _summary(alone, f"reranked_itm_only_{direction}", (1,))[key]
    itm.train(was_training)
    return {**out, "rerank_k": k, "rerank_score": "itm logit + contrastive logit"}


def once_per_query(score):
    """`score(q, candidates)` computed once per query: both rankings of a query read the same top-k candidates."""
    memo: dict[int, torch.Tensor] = {}

    def cached(q: int, cands: torch.Tensor) -> torch.Tensor:
        if q not in memo:
            memo[q] = score(q, cands)
        return memo[q]

    return cached
