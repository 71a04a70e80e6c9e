"""RUN/report.html: training curves, the results table and pictures of what the model learned, in one file.

Every picture is a PNG embedded as base64, so the report can be mailed or attached as it is. Sections
that do not apply to a run (MAE reconstructions of a CLIP run, say) stay in the report and say why.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from zir.eval.run_eval import EvalError, image_size, image_tower, load_run, results_rows
from zir.eval.report_audio import audio_attention, audio_sample
from zir.eval.run_loading import scored_tower
from zir.eval.splits import data_modality, eval_data, plan_stats
from zir.objectives.coca import CoCa
from zir.objectives.mae import MAE

__all__ = ["SECTIONS", "write_report", "read_metrics", "curve_panels", "training_curves_png"]

SECTIONS = ("Training curves", "Results", "Attention and patch features", "MAE reconstructions", "CoCa captions",
            "Segmentation masks")
_NOT_CURVES = {"step", "epoch", "time_s", "samples_per_s", "skipped"}


def read_metrics(path: str | os.PathLike) -> dict[str, list[float]]:
    """metrics.csv as columns of floats (NaN where a row has no value), keyed by the header names."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns: dict[str, list[float]] = {}
    for name in (rows[0].keys() if rows else []):
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name) or "nan"))
            except ValueError:
                values.append(float("nan"))
        columns[name] = values
    return columns


def curve_panels(columns: dict[str, list[float]]) -> list[tuple[str, list[str]]]:
    """(title, column names) of each panel: the losses together, then the k-NN monitor's columns (`knn_top1`,
    even from one measurement), then each other metric that changes, twelve panels at most."""
    losses = [c for c in columns if c == "loss" or c.endswith("_loss")]
    monitored = [c for c in columns if c.startswith("knn") and any(math.isfinite(v) for v in columns[c])]
    others = monitored + [c for c in columns if c not in _NOT_CURVES and c not in losses and c not in monitored
                          and len({v for v in columns[c] if math.isfinite(v)}) > 1]  # constants (mask ratio) say nothing
    return ([("losses", losses)] if losses else []) + [(c, [c]) for c in others[:11]]


def training_curves_png(columns: dict[str, list[float]]) -> bytes:
    """A PNG of the losses on one panel and every other logged metric on a small panel of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = columns.get("step") or list(range(1, 1 + len(next(iter(columns.values())))))
    panels = curve_panels(columns)
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, names) in zip(axes.flat, panels):
        for name in names:
            if name.startswith("knn"):  # the k-NN monitor's, logged every monitor_every steps: join its points
                xs, ys = zip(*[(s, v) for s, v in zip(steps, columns[name]) if math.isfinite(v)])
                ax.plot(xs, ys, label=name, linewidth=1.2, marker="o", markersize=3)
            else:
                ax.plot(steps, columns[name], label=name, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# -- html helpers -----------------------------------------------------------------------------------

def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _section(title: str, body: str) -> str:
    return f'<section><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _why(text: str) -> str:
    return f'<p class="why">{html.escape(text)}</p>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png_file(write) -> bytes:
    """Bytes of the PNG that `write(path)` writes (through a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "picture.png"
        write(path)
        return path.read_bytes()


def _rgb(image: torch.Tensor, mean, std) -> np.ndarray:
    """(3, H, W) normalised image -> (H, W, 3) uint8 with the run's normalisation undone."""
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    x = (image.detach().float().cpu() * s + m).clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# -- sections ---------------------------------------------------------------------------------------

def _curves(run_dir: Path) -> str:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return _why("No training curves: the run has no metrics.csv (it logged no step).")
    columns = read_metrics(path)
    if not columns or not columns.get("step"):
        return _why("No training curves: metrics.csv holds no rows yet.")
    n = len(columns["step"])
    last = {k: v[-1] for k, v in columns.items() if k not in _NOT_CURVES and v and math.isfinite(v[-1])}
    knn = {k: [x for x in v if math.isfinite(x)][-1] for k, v in columns.items()  # the monitor's newest, first
           if k.startswith("knn") and any(math.isfinite(x) for x in v)}
    last = {**knn, **{k: v for k, v in last.items() if k not in knn}}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in list(last.items())[:8])
    return _img(training_curves_png(columns), "training curves") + f"<p>{n} logged steps; last: {html.escape(summary)}.</p>"


def _results(run_dir: Path) -> str:
    path = run_dir / "results.json"
    if not path.is_file():
        return _why(f"Not evaluated yet: run `zir eval {run_dir}` to write results.json.")
    try:
        results = json.loads(path.read_text())
    except ValueError:
        return _why(f"{path} is not valid JSON; run `zir eval {run_dir}` again.")
    rows = results_rows(results)
    if not rows:
        return _why("results.json holds no task results.")
    note = ("<p>Accuracies and recalls in percent. <em>random init</em> is the same architecture at its initial "
            "weights (zir eval --baseline).</p>")
    return _table(["task", "data", "metric", "trained", "random init"], rows) + note


def _sample(run, n: int, data, data_root):
    """n test images (B, 3, S, S) normalised as the run's data, their first captions (or None), mean, std."""
    from zir.data import make_loader

    source = eval_data(data, run.config, data_root, limit=n).test
    mean, std = plan_stats(run.model, run.config)
    _, tower = image_tower(run.model)
    plan = {"global": 1, "pipeline": "none", "size": image_size(tower), "mean": mean, "std": std}
    with_text = bool(source.has_captions)
    if with_text:
        plan["text"] = 1
    batch = next(iter(make_loader(source, plan, n, shuffle=False, drop_last=False)))
    captions = batch.captions.get("text_0") if with_text else None
    return batch.views["global_0"][:n], captions, mean, std


def _audio_tower(run, data, data_root, n: int):
    """(name, tower, test source) when the tower `zir eval` scores on this data is an audio tower, else None."""
    source = eval_data(data, run.config, data_root, limit=n).test
    name, tower = scored_tower(run.model, data_modality(source))
    return (name, tower, source) if tower.modality == "audio" else None


def _attention(run, images) -> str:
    from zir.eval.explain import explain_image

    name, tower = image_tower(run.model)
    if not tower.can_return_attention:
        return _why(f"The {name} tower ({type(tower).__name__}) does not expose attention weights.")
    png = _png_file(lambda p: explain_image(tower, images, p))
    return (_img(png, "attention") + "<p>Per test image: the image, attention rollout over all blocks, each head's CLS "
            "attention in the last block, and the first three principal components of the patch features as RGB.</p>")


def _mae(run, images, mean, std) -> str:
    from zir.data.masking import random_mask
    from zir.eval.pictures import save_panels

    mae = next((o for o in run.model.objectives.values() if isinstance(o, MAE)), None)
    if mae is None:
        return _why("The run has no MAE objective, so there is nothing to reconstruct.")
    patch = mae.patch
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    mask = random_mask(images.shape[0], grid, mae.mask_ratio, seed=0)
    with torch.no_grad():
        recon = mae.reconstruct(images, mask.keep)
    hidden = mask.mask.reshape(-1, 1, *grid).float()
    hidden = torch.nn.functional.interpolate(hidden, size=images.shape[-2:], mode="nearest")
    grey = torch.tensor([(0.5 - m) / s for m, s in zip(mean, std)])[None, :, None, None]
    masked = images * (1 - hidden) + grey * hidden
    rows = [[("image", _rgb(images[i], mean, std)), ("masked", _rgb(masked[i], mean, std)),
             ("reconstruction", _rgb(recon[i], mean, std))] for i in range(images.shape[0])]
    png = _png_file(lambda p: save_panels(rows, p))
    ratio = mae.mask_ratio
    return _img(png, "MAE reconstructions") + (f"<p>{ratio:.0%} of the patches hidden; the visible ones are copied "
                                              "and the hidden ones predicted by the decoder.</p>")


def _coca(run, images, captions, mean, std) -> str:
    coca = next((o for o in run.model.objectives.values() if isinstance(o, CoCa)), None)
    if coca is None:
        return _why("The run has no CoCa objective, so it does not caption images.")
    tokenizer = run.tokenizer
    if tokenizer is None:
        return _why("The run has a CoCa objective but saved no tokenizer to turn token ids into words.")
    from zir.objectives.coca import generate_captions

    written = generate_captions(run.model, images, tokenizer)
    from PIL import Image

    cells = []
    for i, text in enumerate(written):
        buf = io.BytesIO()
        Image.fromarray(_rgb(images[i], mean, std)).resize((96, 96), Image.NEAREST).save(buf, format="PNG")
        truth = f"<br><small>a human caption: {html.escape(captions[i])}</small>" if captions else ""
        cells.append(f"<div class=cap>{_img(buf.getvalue(), 'image')}<br>{html.escape(text)}{truth}</div>")
    return "".join(cells) + "<p>Greedy decoding from the multimodal decoder.</p>"


def _segmentation(run_dir: Path) -> str:
    from zir.eval.pictures import save_panels
    from zir.eval.segment_pictures import MASKS_FILE, class_colour, load_segment_masks, segment_rows

    path = run_dir / MASKS_FILE
    if not path.is_file():
        return _why(f"No segmentation masks: run `zir eval {run_dir} --tasks segment` on data with per-pixel "
                    "masks (shapes) to draw the probe's predictions.")
    masks = load_segment_masks(path)
    png = _png_file(lambda p: save_panels(segment_rows(masks), p))
    legend = " ".join(f'<span style="background:rgb{class_colour(i)};padding:0 9px;border:1px solid #999">'
                      f'</span> {html.escape(str(name))}' for i, name in enumerate(masks["classes"]))
    return _img(png, "segmentation masks") + (
        "<p>Per test image: the image, its true mask and the linear segmentation probe's prediction from the "
        f"frozen patch tokens (zir eval --tasks segment). Classes: {legend}.</p>")


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.why{color:#777;font-style:italic}.cap{display:inline-block;width:200px;vertical-align:top;margin:6px}
img{max-width:100%}"""


def write_report(run_dir: str | os.PathLike, data: str | None = None, data_root: str | os.PathLike | None = None,
                 images: int = 4) -> Path:
    """Write RUN/report.html (curves, results table, attention, MAE reconstructions, CoCa captions, the
    segmentation probe's masks); returns it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise EvalError(f"{run_dir} is not a run folder (no config.yaml)")
    sections = {"Training curves": _curves(run_dir), "Results": _results(run_dir)}
    pictures = SECTIONS[2:]
    try:
        run = load_run(run_dir)
    except EvalError as err:
        run, reason = None, f"No pictures: {err}."
    step = "" if run is None else f" at step {run.step}"
    audio = None
    if run is not None:
        try:
            audio = _audio_tower(run, data, data_root, images)
            if audio is not None:
                name, tower, source = audio
                batch, labels = audio_sample(run, tower, source, images)
            else:
                batch, captions, mean, std = _sample(run, images, data, data_root)
        except Exception as err:  # noqa: BLE001 - the report still shows curves and results
            run, reason = None, f"No pictures: the test {'recordings' if audio else 'images'} could not be read ({err})."
    if run is None:
        for title in pictures:
            sections[title] = _why(reason)
    elif audio is not None:
        sections[pictures[0]] = audio_attention(name, tower, batch, labels, _png_file)
        sections[pictures[1]] = _why("Reconstructions are drawn for image towers; this run's scored tower is audio.")
        sections[pictures[2]] = _why("CoCa captions images; this run's scored tower is audio.")
        sections[pictures[3]] = _why("The segmentation probe reads image towers; this run's scored tower is audio.")
    else:
        makers = {"Attention and patch features": lambda: _attention(run, batch),
                  "MAE reconstructions": lambda: _mae(run, batch, mean, std),
                  "CoCa captions": lambda: _coca(run, batch, captions, mean, std),
                  "Segmentation masks": lambda: _segmentation(run_dir)}
        for title in pictures:
            try:
                sections[title] = makers[title]()
            except Exception as err:  # noqa: BLE001 - one failed picture must not lose the whole report
                sections[title] = _why(f"Could not draw this section: {type(err).__name__}: {err}")
    name = html.escape(run_dir.name)
    body = "\n".join(_section(t, sections[t]) for t in SECTIONS)
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>zir report: {name}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>zir report: {name}{html.escape(step)}</h1>\n"
            f"<p>Run folder {html.escape(str(run_dir))}.</p>\n{body}\n</body></html>\n")
    out = run_dir / "report.html"
    tmp = out.with_name("report.html.tmp")
    tmp.write_text(page)
    os.replace(tmp, out)
    return out
