"""Audio<->text retrieval: the `retrieval` task when the tower `zir eval` scores is an audio tower.

Each test recording's embedding (the audio tower through its audio-text objective's projection, or an
ImageBind run's emergent joint space) ranks every test caption (the text tower), and each caption ranks the
recordings. A hit is an item of the same class, not the exact pair: spoken-digit captions are a handful of
templates around the word (`the digit seven`), so every recording of a digit has the same captions and the
exact pair is a tie among them. Captions are the source's own (`fsdd`) or, for a labelled folder without
captions, its class-name captions (`the sound of a dog.`). R@K is the percent of queries with a hit among
their K nearest; chance at R@1 is about one over the number of classes.
"""

from __future__ import annotations

import torch

from zir.eval.av_retrieval import class_recall


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
    text_labels = labels.repeat_interleave(per)
    with torch.no_grad():
        sounds = ctx.image_text.project_image(x)
    a2t, t2a = class_recall(sounds, texts, labels, text_labels), class_recall(texts, sounds, text_labels, labels)
    res = {f"a2t_R@{k}": v for k, v in a2t.items()} | {f"t2a_R@{k}": v for k, v in t2a.items()}
    return {data.test_split: {**res, **ctx.where(), "hits": "same class", "n_recordings": int(x.shape[0]),
                              "n_captions": int(texts.shape[0])}}
