"""Audio<->text retrieval: the `retrieval` task when the tower `zir eval` scores is an audio tower.

Each test recording's embedding (the audio tower through its audio-text objective's projection, or an
ImageBind run's emergent joint space) ranks every test caption (the text tower), and each caption ranks the
recordings. A hit is an item of the same class, not the exact pair: spoken-digit captions are a handful of
templates around the word (`the digit seven`), so every recording of a digit has the same captions and the
exact pair is a tie among them; and each distinct caption is ranked once (`fsdd`: 50, ten digits in five
templates), else a recording's K nearest are K copies of one caption. Captions are the source's own (`fsdd`) or, for a labelled folder without
captions, its class-name captions (`the sound of a dog.`). R@K is the percent of queries with a hit among
their K nearest; chance at R@1 is about one over the number of classes.
"""

from __future__ import annotations

import torch

from zir.eval.av_retrieval import class_recall


def distinct_rows(texts: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each distinct caption embedding once (equal to 1e-4, first kept), with its label: a caption written
    for many recordings would otherwise fill every one of a query's K nearest with copies of itself."""
    _, inverse = torch.unique((texts.float() * 1e4).round(), dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin").sort().values
    return texts[first], labels[first]


def audio_text_retrieval(ctx) -> dict[str, dict]:
    """Audio->text and text->audio R@1 and R@5 (same-class hits) on the test split; `ctx` an EvalContext."""
    data = ctx.data
    reason = ctx.text_reason()
    if reason or not (data.test.has_captions or data.test.classes):
        return ctx.skipped(reason or f"{data.name} has no captions and no class names to caption with")
    x, labels = ctx.pooled(data.test_split, data.test)
    if labels is None or not bool((labels >= 0).all()):
        return ctx.skipped(f"{data.name} has no class labels (audio<->text retrieval counts same-class hits)")
    texts = ctx.features.captions(data.test_split, data.test, ctx.image_text.encode_text)
    per = texts.shape[0] // x.shape[0]
    texts, text_labels = distinct_rows(texts, labels.repeat_interleave(per))
    with torch.no_grad():
        sounds = ctx.image_text.project_image(x)
    a2t, t2a = class_recall(sounds, texts, labels, text_labels), class_recall(texts, sounds, text_labels, labels)
    res = {f"a2t_R@{k}": v for k, v in a2t.items()} | {f"t2a_R@{k}": v for k, v in t2a.items()}
    return {data.test_split: {**res, **ctx.where(), "hits": "same class", "n_recordings": int(x.shape[0]),
                              "n_captions": int(texts.shape[0])}}  # distinct captions
