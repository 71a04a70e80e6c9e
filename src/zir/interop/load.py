"""Recognise a released checkpoint (a file or a folder) by its files and keys, and build it as zir towers.

- a folder with `config.json` whose `model_type` transformers uses (clip, vit, vit_mae, dinov2,
  dinov2_with_registers) and `model.safetensors` (or `pytorch_model.bin`): `hf_layout`;
- a file, or a folder holding `open_clip_model.safetensors` / `open_clip_pytorch_model.bin` / one `*.pt`,
  whose keys are open_clip's / OpenAI's CLIP layout: `open_clip_layout`;
- a file (or a folder with one `*.pth` / `*.pt`) in DINOv2's own layout: `dinov2_layout`.

A `tokenizer.json` beside the weights (else CLIP's merges file, `bpe_simple_vocab_16e6.txt.gz`) becomes the
model's tokenizer for `encode_text` on strings. Files are
read as data only: safetensors, or PyTorch pickles with `weights_only=True`; nothing named in them runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zir.errors import WeightsError
from zir.interop.pretrained import PretrainedModel

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def _hf_folder(path: Path) -> tuple[dict, Path] | None:
    """(config, weights file) of a transformers folder, or None when `path` is not one."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    config = _read_json(path / "config.json")
    if config.get("model_type", "zir") == "zir":  # `zir export --format hf` of towers transformers lacks: zir's layout
        return None
    weights = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
    if weights is None:
        raise WeightsError(f"{path}: config.json but no {' or '.join(HF_WEIGHTS)} (sharded checkpoints are not read)")
    return config, weights


def _state_file(path: Path) -> tuple[Path, str] | None:
    """(weights file, 'open_clip' or 'dinov2') of a checkpoint at `path` (a file, or a folder with one), else None."""
    if path.is_dir():
        if (path / "model.safetensors").is_file():  # a zir checkpoint or export folder
            return None
        found = [path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()] or \
            sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        path = found[0] if len(found) == 1 else None
    if path is None or not path.is_file():
        return None
    kind = _layout_of(path)
    return (path, kind) if kind else None


def _layout_of(path: Path) -> str:
    """'open_clip', 'dinov2' or '' from a file's keys (safetensors headers only; pickles with weights_only)."""
    from zir.interop.dinov2_layout import is_dinov2
    from zir.interop.open_clip_layout import is_open_clip
    from zir.models.weights import read_state_dict

    keys: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("format") == "zir":  # zir's own weights (save_weights, export)
                    return ""
                keys = dict.fromkeys(handle.keys())
        except Exception:  # noqa: BLE001 - not a safetensors file: not ours to read
            return ""
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            keys = read_state_dict(path)
        except Exception:  # noqa: BLE001 - unreadable or no tensors: not a released checkpoint
            return ""
    return "open_clip" if is_open_clip(keys) else "dinov2" if is_dinov2(keys) else ""


def _tokenizer(folder: Path, context_length: int):
    """tokenizer.json beside the weights, else CLIP's merges file (open_clip's bpe_simple_vocab_*.txt.gz), else None."""
    from zir.data.clip_bpe import is_merges_file
    from zir.data.tokenizer import load_tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        path = next((p for p in sorted(folder.glob("*.txt.gz")) if is_merges_file(p)), None)
    return load_tokenizer(path, context_length=context_length) if path is not None else None


def is_foreign(path: str | os.PathLike) -> bool:
    """Whether `path` is a checkpoint `load_pretrained` reads (a transformers folder or an open_clip file)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            return False
        return model_type not in (None, "zir")
    return _state_file(path) is not None


def load_pretrained(path: str | os.PathLike) -> PretrainedModel | None:
    """The checkpoint at `path` as a `PretrainedModel` in eval mode, or None when it is not a foreign format."""
    from zir.interop.hf_layout import from_hf
    from zir.interop.dinov2_layout import from_dinov2
    from zir.interop.open_clip_layout import from_open_clip
    from zir.models.weights import read_state_dict

    path = Path(path)
    hf = _hf_folder(path)
    if hf is not None:
        config, weights = hf
        spec, state = from_hf(config, read_state_dict(weights), str(path / "config.json"))
        source, folder = f"{path} (transformers {config['model_type']})", path
    else:
        found = _state_file(path) if path.exists() else None
        if found is None:
            return None
        file, kind = found
        raw, folder = read_state_dict(file), file.parent
        if kind == "dinov2":
            spec, state = from_dinov2(raw, str(file))
        else:
            cfg_file = folder / "open_clip_config.json"
            model_cfg = _read_json(cfg_file).get("model_cfg") if cfg_file.is_file() else None
            spec, state = from_open_clip(raw, model_cfg if isinstance(model_cfg, dict) else None, str(file))
        source = f"{file} ({kind})"
    context = spec["text"]["context_length"] if "text" in spec else 0
    model = PretrainedModel(spec, _tokenizer(folder, context) if context else None, source)
    model.load_converted(state, source)
    return model.eval()

