"""The report's pictures of an audio tower: spectrograms of a few test recordings with attention rollout over them.

Used by `write_report()` when the tower `zir eval` scores is an audio tower (a model without an image tower,
or data of recordings alone); the recordings are read as the evaluation reads them (`extraction_plan`).
"""

from __future__ import annotations

import torch

from zir.eval.splits import extraction_plan


def audio_sample(run, tower: torch.nn.Module, source, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n usable test recordings as (B, 1, n_mels, frames) normalised log-mels, and their labels (B,)."""
    from zir.data import make_loader

    plan, view = extraction_plan(run.model, run.config, tower)
    batch = next(iter(make_loader(source, plan, n, shuffle=False, drop_last=False)))
    return batch.views[view][:n], batch.labels[:n]


def audio_attention(name: str, tower: torch.nn.Module, mels: torch.Tensor, labels: torch.Tensor, png_file) -> str:
    """The report section's HTML body: one row per recording (spectrogram, rollout, rollout over it)."""
    from zir.eval.explain_audio import explain_spectrograms
    from zir.eval.report import _img, _why

    if not tower.can_return_attention:
        return _why(f"The {name} tower ({type(tower).__name__}) does not expose attention weights.")
    titles = [f"test clip {i + 1}" + (f", class {int(y)}" if int(y) >= 0 else "") for i, y in enumerate(labels)]
    png = png_file(lambda p: explain_spectrograms(tower, mels, p, titles))
    return (_img(png, "attention over spectrograms") + f"<p>Per test recording, through the {name} tower: its "
            "log-mel spectrogram (low frequencies at the bottom, time to the right), attention rollout over all blocks "
            "on the frequency x time patch grid, and the rollout blended over the spectrogram.</p>")
