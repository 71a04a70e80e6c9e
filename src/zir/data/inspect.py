"""`zir data inspect SOURCE`: counts, class balance, caption statistics, image sizes or audio durations, bad files,
and a PNG of samples (spectrograms for audio) and views."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from zir.data.builtin import open_source
from zir.data.loader import to_item
from zir.data.plan import ViewCollate, ViewPlan
from zir.data.shards import ShardSource
from zir.data.sources import BadSample, DataReport, MapSource, Sample, Source
from zir.data.transforms import denormalize


def _samples(source: Source, limit: int, report: DataReport):
    if isinstance(source, MapSource):
        for i in range(min(len(source), limit)):
            try:
                yield source.get(i)
            except BadSample as bad:
                report.skip(bad.key, bad.reason)
    elif isinstance(source, ShardSource):
        n = 0
        for got in source.stream():
            if isinstance(got, BadSample):
                report.skip(got.key, got.reason)
                continue
            yield got
            n += 1
            if n >= limit:
                break
    else:
        for n, got in enumerate(source):
            if n >= limit:
                break
            yield got


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "mean": round(float(a.mean()), 2), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def inspect_source(
    spec: str | os.PathLike | Source,
    out_png: str | os.PathLike | None = None,
    *,
    plan: ViewPlan | dict | None = None,
    limit: int = 5000,
    data_root=None,
    show: int = 16,
    **options,
) -> dict:
    """Read up to `limit` samples of a source and summarise them; write a PNG grid of samples and views.

    Returns a dict: source, samples (total when known), read, ok, classes (name -> count), captions
    (per image and words per caption: min/mean/p95/max), image_sizes (the most common), bad (skips and
    conversions with the first files), png (the path written, or None).
    """
    source = spec if isinstance(spec, Source) else open_source(spec, data_root=data_root, **options)
    report = DataReport()
    labels: Counter = Counter()
    per_image, words, sizes, seconds, rates = [], [], Counter(), [], Counter()
    shown: list[Sample] = []
    read = 0
    for s in _samples(source, limit, report):
        read += 1
        for note in s.notes:
            report.convert(s.key, note)
        if s.label >= 0:
            labels[s.label] += 1
        if s.captions:
            per_image.append(len(s.captions))
            words += [len(c.split()) for c in s.captions]
        if s.image is not None:
            sizes[f"{s.image.shape[1]}x{s.image.shape[0]}"] += 1
        if s.audio is not None:
            seconds.append(len(s.audio) / s.sample_rate)
            rates[s.sample_rate] += 1
        if len(shown) < show:
            shown.append(s)
    report.seen = read + report.n_skipped
    total = len(source) if isinstance(source, MapSource) else getattr(source, "length", None)
    info = {
        "source": source.name,
        "samples": total,
        "read": report.seen,
        "ok": read,
        "classes": {(source.classes[k] if source.classes and k < len(source.classes) else str(k)): v for k, v in sorted(labels.items())},
        "captions": {"per_image": _stats(per_image), "words": _stats(words)} if per_image else {},
        "image_sizes": dict(sizes.most_common(5)),
        "audio": {"seconds": _stats(seconds), "sample_rates": dict(rates.most_common(5))} if seconds else {},
        "bad": report.as_dict(),
        "png": None,
    }
    if out_png is not None and shown:
        info["png"] = str(_draw(source, shown, plan, Path(out_png)))
    return info


def summary_lines(info: dict) -> list[str]:
    """The result of inspect_source as short printable lines."""
    lines = [f"source      {info['source']}"]
    total = info["samples"] if info["samples"] is not None else "unknown"
    lines.append(f"samples     {total} (read {info['read']}, usable {info['ok']})")
    if info["classes"]:
        counts = list(info["classes"].values())
        lines.append(f"classes     {len(counts)}, {min(counts)}..{max(counts)} per class")
        lines.append("            " + ", ".join(f"{k}: {v}" for k, v in info["classes"].items()))
    if info["captions"]:
        c = info["captions"]
        per = "recording" if info.get("audio") and not info["image_sizes"] else "image"
        lines.append(f"captions    {c['per_image']['mean']} per {per}; words per caption min {c['words']['min']:.0f}, "
                     f"mean {c['words']['mean']}, p95 {c['words']['p95']:.0f}, max {c['words']['max']:.0f}")
    if info["image_sizes"] or not info.get("audio"):
        lines.append("image size  " + ", ".join(f"{k} ({v})" for k, v in info["image_sizes"].items()))
    if info.get("audio"):
        a = info["audio"]["seconds"]
        rates = ", ".join(f"{k} Hz ({v})" for k, v in info["audio"]["sample_rates"].items())
        lines.append(f"audio       {rates}; seconds min {a['min']:.2f}, mean {a['mean']}, p95 {a['p95']:.2f}, max {a['max']:.2f}")
    bad = info["bad"]
    if not bad["skipped"] and not bad["converted"]:
        lines.append("bad data    none")
    for kind in ("skipped", "converted"):
        for reason, n in bad[kind].items():
            first = ", ".join(bad["examples"].get(reason, []))
            lines.append(f"{kind:<11} {n} {reason} (first: {first})")
    if info["png"]:
        lines.append(f"grid        {info['png']}")
    return lines


def _tile(image: np.ndarray, side: int):
    from PIL import Image

    return Image.fromarray(image).resize((side, side), Image.NEAREST if image.shape[0] < side else Image.BILINEAR)


def _draw(source: Source, shown: list[Sample], plan, out: Path) -> Path:
    from PIL import Image, ImageDraw

    side, cap_h, cols = 96, 40, 8
    rows = -(-len(shown) // cols)
    plan = plan if isinstance(plan, ViewPlan) else ViewPlan.from_dict(plan or {"global": 2})
    names = plan.view_names() if any(s.image is not None for s in shown) else []  # audio: the spectrograms alone
    n_views = min(len(shown), cols)
    height = rows * (side + cap_h) + (len(names) * side + 20 if names else 0)
    canvas = Image.new("RGB", (cols * side, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, s in enumerate(shown):
        x, y = (i % cols) * side, (i // cols) * (side + cap_h)
        canvas.paste(_tile(s.image if s.image is not None else _spectrogram_picture(s), side), (x, y))
        text = s.captions[0] if s.captions else (source.classes[s.label] if source.classes and s.label >= 0 else s.key)
        for j, line in enumerate(_wrap(text, 16)[:3]):
            draw.text((x + 2, y + side + 1 + 12 * j), line, fill=(0, 0, 0))
    if names:
        y0 = rows * (side + cap_h) + 20
        draw.text((2, y0 - 16), f"views ({plan.pipeline}): " + ", ".join(names), fill=(0, 0, 0))
        load = getattr(source, "image_size", None) or plan.size
        items = [to_item(s, source, load, plan.text > 0) for s in shown[:n_views]]
        items = [it for it in items if not hasattr(it, "reason")]
        if items:
            batch = ViewCollate(plan)(items)
            for r, name in enumerate(names):
                imgs = denormalize(batch.views[name], plan.mean, plan.std).clamp(0, 1)
                imgs = (imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                for c, img in enumerate(imgs):
                    canvas.paste(_tile(img, side), (c * side, y0 + r * side))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def _spectrogram_picture(sample: Sample) -> np.ndarray:
    """A recording's log-mel (64 bins, 25 ms windows every 10 ms) as an (H, W, 3) grey picture, low bins at the bottom."""
    from zir.data.spectrogram import Spectrogram, log_mel

    rate = sample.sample_rate
    hop = max(1, rate // 100)
    spec = Spectrogram(sample_rate=rate, n_fft=max(512, 1 << (rate // 40 - 1).bit_length()), win_length=rate // 40,
                       hop_length=hop, n_mels=64, frames=1 + len(sample.audio) // hop)
    mel = log_mel(torch.as_tensor(sample.audio, dtype=torch.float32), spec).flip(0)
    grey = ((mel - mel.min()) / (mel.max() - mel.min() + 1e-6) * 255).round().to(torch.uint8).numpy()
    return np.repeat(grey[..., None], 3, axis=2)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    if cur:
        lines.append(cur)
    return lines
