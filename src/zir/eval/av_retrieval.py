"""`av_retrieval`: audio-to-image and image-to-audio retrieval in an ImageBind model's joint space, on data whose
samples carry both (`av_digits`).

Each test recording's embedding (the audio tower through its bound projection) ranks every test image's (the
image tower through the anchor projection), and the other way round. A hit is an item of the same class (a
recording of "seven" retrieving an image of a 7): the pairs of `av_digits` are drawn within a class, so which
of a class's images a recording was paired with carries no signal to retrieve. R@K is the percent of queries
with a hit among their K nearest; chance at R@1 is about 10% for ten balanced classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.eval.extractor import FeatureExtractor
from zir.eval.splits import data_modalities, extraction_plan
from zir.eval.tasks import EvalContext, register_task
from zir.objectives.imagebind import ImageBind


def class_recall(queries: torch.Tensor, items: torch.Tensor, query_labels: torch.Tensor, item_labels: torch.Tensor,
                 ks=(1, 5)) -> dict[int, float]:
    """Percent of queries (N, E) with an item (M, E) of their own label among their K most similar, per K."""
    sim = F.normalize(queries.float(), dim=-1) @ F.normalize(items.float(), dim=-1).T
    order = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices  # (N, K): every item when there are fewer than K
    same = item_labels[order] == query_labels[:, None]
    return {k: 100.0 * float(same[:, :k].any(dim=1).float().mean()) for k in ks}


def _bound_audio(model) -> tuple[ImageBind, str] | tuple[None, None]:
    for obj in model.objectives.values():
        if isinstance(obj, ImageBind):
            for name in obj.bound:
                if obj.towers[name].modality == "audio":
                    return obj, name
    return None, None


def av_retrieval(ctx: EvalContext) -> dict[str, dict]:
    """Audio->image and image->audio R@1 and R@5 (same-class hits) on the test split."""
    data = ctx.data
    bind, audio_name = _bound_audio(ctx.model)
    if ctx.teacher or bind is None:
        return ctx.skipped("the image-audio projection was trained on the student's features" if ctx.teacher else
                           "the model binds no audio tower to an image tower (objective imagebind)")
    if data_modalities(data.test) != {"image", "audio"}:
        return ctx.skipped(f"{data.name} samples do not carry both an image and a recording")
    towers = {}
    for name in (bind.tower_name, audio_name):
        tower = bind.towers[name]
        towers[name] = FeatureExtractor((name, tower), ctx.features.tag, ctx.features.cache_dir, data,
                                        extraction_plan(ctx.model, ctx.config, tower), ctx.limit, ctx.batch_size, None)
    image_x, labels = towers[bind.tower_name].pooled(data.test_split, data.test)
    audio_x, audio_labels = towers[audio_name].pooled(data.test_split, data.test)
    if labels is None or not bool((labels >= 0).all()) or not torch.equal(labels, audio_labels):
        return ctx.skipped(f"{data.name} has no class labels")
    with torch.no_grad():
        images = bind.anchor_proj(image_x.to(bind.anchor_proj.weight.dtype))
        sounds = bind.proj[audio_name](audio_x.to(bind.anchor_proj.weight.dtype))
    a2i, i2a = class_recall(sounds, images, labels, labels), class_recall(images, sounds, labels, labels)
    res = {f"a2i_R@{k}": v for k, v in a2i.items()} | {f"i2a_R@{k}": v for k, v in i2a.items()}
    return {data.test_split: {**res, **ctx.where(), "n_test": int(labels.numel()), "audio_tower": audio_name}}


register_task("av_retrieval", av_retrieval)
