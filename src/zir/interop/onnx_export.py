"""`zir export RUN --format onnx`: each tower of a run as an ONNX graph with a dynamic batch axis.

An image-text run (a CLIP or SigLIP objective reading `image` and `text`) gives `image.onnx` (images ->
projected features, as `encode_image` returns them: not normalised) and `text.onnx` (token ids padded to
the tower's context length -> projected features); any other run one `<tower>.onnx` per image or text tower
with its pooled features. Graphs come from torch's TorchScript-based exporter (the `onnx` package; the
`torch.export` one cannot follow the text tower's input checks), opset 17; `onnxruntime` runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from zir.errors import ConfigError

OPSET = 17


class Encoder(nn.Module):
    """One tower's forward to its pooled (and, for an image-text objective, projected) features."""

    def __init__(self, tower: nn.Module, projection: nn.Module | None = None) -> None:
        super().__init__()
        self.tower, self.projection = tower, projection or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.tower.pool(self.tower.forward_tokens(x)))


def encoders(model: nn.Module) -> dict[str, tuple[Encoder, torch.Tensor, str]]:
    """{file stem: (encoder, example input, input name)} for the image and text towers of a run's model."""
    from zir.objectives.clip import ImageText

    towers = getattr(model, "towers", {})
    pair = [o for o in getattr(model, "objectives", {}).values()
            if isinstance(o, ImageText) and o.tower_name == "image" and o.text_tower_name == "text"]
    out = {}
    for name, tower in towers.items():
        projection = None
        if pair and name in ("image", "text"):
            projection = pair[0].image_proj if name == "image" else pair[0].text_proj
        if tower.modality == "image":
            example = torch.randn(2, tower.in_chans, tower.img_size[0], tower.img_size[1])
            out[name] = (Encoder(tower, projection).eval(), example, "images")
        elif tower.modality == "text":
            example = torch.zeros(2, tower.context_length, dtype=torch.long)
            out[name] = (Encoder(tower, projection).eval(), example, "input_ids")
    if not out:
        raise ConfigError("--format onnx: the model has no image or text tower to export")
    return out


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, ema: bool = False) -> list[Path]:
    """Write RUN's towers as ONNX files into `out` (default RUN/export_onnx); returns their paths."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it: say so in one line, not deep in torch
        raise ConfigError("--format onnx needs the onnx package: pip install onnx onnxruntime")
    from zir.interop.export import run_model

    run_dir = Path(run_dir)
    _, model, _ = run_model(run_dir, ema)
    out = Path(out) if out else run_dir / "export_onnx"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (encoder, example, input_name) in encoders(model).items():
        path = out / f"{name}.onnx"
        with torch.no_grad():
            torch.onnx.export(encoder, (example,), str(path), input_names=[input_name], output_names=["features"],
                              dynamic_axes={input_name: {0: "batch"}, "features": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)
        written.append(path)
    return written
