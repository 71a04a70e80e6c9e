"""`zir export RUN --format hf`: pick the transformers architecture the run's towers are, write the folder.

transformers' CLIP pools the text at the first `eos_token_id`, except for id 2, where (for old configs)
it pools at the highest id instead. zir's tokenizers give the end token id 2, so the export swaps it with
the last id of the vocabulary, in the token embedding and in tokenizer.json alike: the same text gets the
same features, and the folder's own tokenizer produces the swapped ids.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from zir.errors import ConfigError, WeightsError
from zir.interop.hf_export import LICENCE_DEFAULT, clip_to_hf, save_hf_weights, vit_to_hf, write_json
from zir.interop.model_card import model_card

LEGACY_EOS = 2  # transformers' CLIP pools at argmax(ids) when eos_token_id is 2


def swap_token_ids(tokenizer: dict, a: int, b: int) -> dict:
    """A tokenizer.json (parsed) in which ids a and b trade places: vocabulary, added and special tokens, padding."""
    def swap(i: int) -> int:
        return b if i == a else a if i == b else i

    out = json.loads(json.dumps(tokenizer))
    vocab = out.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        out["model"]["vocab"] = {t: swap(i) for t, i in vocab.items()}
    for token in out.get("added_tokens") or []:
        token["id"] = swap(token["id"])
    for special in ((out.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [swap(i) for i in special.get("ids", [])]
    processor = out.get("post_processor") or {}
    for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(processor.get(key), list):
            processor[key][1] = swap(processor[key][1])
    if isinstance(out.get("padding"), dict) and "pad_id" in out["padding"]:
        out["padding"]["pad_id"] = swap(out["padding"]["pad_id"])
    return out


def run_model(run_dir: Path, ema: bool):
    from zir.config import read_yaml
    from zir.models.factories import build_recipe_model
    from zir.train import checkpoint as ckpt

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    raw = read_yaml(run_dir / "config.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{run_dir / 'config.yaml'}: expected a mapping with model, data, optim and train sections")
    where, (model_state, state, ema_state) = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if ema:
        if ema_state is None:
            raise ConfigError(f"{run_dir} keeps no weight EMA (train.ema was off)")
        model_state = {**model_state, **ema_state}
    model = build_recipe_model(raw.get("model") or {}, origin=str(run_dir / "config.yaml"))
    try:
        model.load_state_dict(model_state)
    except RuntimeError as err:
        raise WeightsError(f"{where} does not fit its run's model config: {str(err).splitlines()[0]}") from None
    return raw, model.eval(), int(state["step"])


def _clip_objective(model):
    from zir.objectives.clip import CLIP

    found = [o for o in getattr(model, "objectives", {}).values() if type(o) is CLIP]
    return found[0] if len(found) == 1 else None


def export_hf(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, ema: bool = False,
              license: str = LICENCE_DEFAULT) -> tuple[Path, str]:
    """Write RUN's newest checkpoint as a transformers-layout folder; returns (folder, model_type or 'zir: why')."""
    run_dir = Path(run_dir)
    raw, model, step = run_model(run_dir, ema)
    out = Path(out) if out else run_dir / "export_hf"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is there, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_file = run_dir / "tokenizer.json"
    towers = getattr(model, "towers", {})
    clip = _clip_objective(model)
    kind, why, tokenizer = "zir", "", None
    try:
        if clip is not None and clip.tower_name == "image" and clip.text_tower_name == "text":
            config, state, tokenizer = _clip(model, clip, tokenizer_file)
        elif "image" in towers and len(towers) == 1:
            config, state = vit_to_hf(towers["image"])
        else:
            raise ConfigError("--format hf: the model is neither one image tower nor a CLIP image-text pair")
        kind = config["model_type"]
        with torch.no_grad():
            save_hf_weights(state, out / "model.safetensors")
    except ConfigError as err:  # towers transformers has no class for: zir's own layout in the same folder
        why = str(err).split(": ", 1)[-1]
        from zir.train.runs import export_run

        export_run(run_dir, out / "model.safetensors", ema=ema)
        config = {"model_type": "zir", "architectures": ["zir"], "zir_model": raw.get("model") or {}}
    config["zir"] = {"run": raw.get("name", ""), "step": step, "ema": bool(ema)}
    write_json(config, out / "config.json")
    if tokenizer is not None:
        write_json(tokenizer, out / "tokenizer.json")
    elif tokenizer_file.is_file():
        shutil.copyfile(tokenizer_file, out / "tokenizer.json")
    results = run_dir / "results.json"
    (out / "README.md").write_text(model_card(raw, step, kind, license, _json_or_empty(results), why), encoding="utf-8")
    return out, kind if kind != "zir" else f"zir ({why})"


def export_open_clip(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, ema: bool = False,
                     license: str = LICENCE_DEFAULT) -> Path:
    """Write RUN's CLIP pair as open_clip's state dict (open_clip_model.safetensors), its open_clip_config.json,
    the run's tokenizer.json (end token moved to the last id: open_clip pools at the highest) and a card."""
    from zir.interop.open_clip_layout import from_hf_clip, open_clip_config

    run_dir = Path(run_dir)
    raw, model, step = run_model(run_dir, ema)
    clip = _clip_objective(model)
    if clip is None or clip.tower_name != "image" or clip.text_tower_name != "text":
        raise ConfigError("--format open_clip: the run is not a CLIP pair (towers image and text, a clip objective)")
    norms = {m.eps for tower in (model.towers["image"], model.towers["text"]) for m in tower.modules()
             if isinstance(m, torch.nn.LayerNorm)}
    if norms != {1e-5}:
        raise ConfigError(f"--format open_clip: open_clip's LayerNorms use eps 1e-5; this run's use {sorted(norms)} "
                          "(build the image tower with layer_norm_eps: 1.0e-5)")
    config, state, tokenizer = _clip(model, clip, run_dir / "tokenizer.json", eot_last=True)
    out = Path(out) if out else run_dir / "export_open_clip"
    out.mkdir(parents=True, exist_ok=True)
    save_hf_weights(from_hf_clip(state), out / "open_clip_model.safetensors")
    write_json(open_clip_config(config), out / "open_clip_config.json")
    write_json(tokenizer, out / "tokenizer.json")
    (out / "README.md").write_text(model_card(raw, step, "open_clip", license, _json_or_empty(run_dir / "results.json")),
                                   encoding="utf-8")
    return out


def _clip(model, clip, tokenizer_file: Path, eot_last: bool = False) -> tuple[dict, dict, dict]:
    from zir.data.tokenizer import load_tokenizer

    if not tokenizer_file.is_file():
        raise ConfigError(f"--format hf: {tokenizer_file} is missing; a CLIP export needs the run's tokenizer")
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    text = model.towers["text"]
    loaded = load_tokenizer(tokenizer_file)
    eot, sot = loaded.eot_id, loaded.sot_id
    last = text.vocab_size - 1
    swap = (eot == LEGACY_EOS or eot_last and eot != last) and text.eot_id is None
    if text.eot_id is not None and text.eot_id != eot:
        raise ConfigError(f"--format hf: the text tower pools at id {text.eot_id}, the tokenizer ends text with {eot}")
    if eot_last and text.eot_id is not None and eot != last:
        raise ConfigError(f"--format open_clip: open_clip pools at the highest id; the end token is {eot}, not {last}")
    config, state = clip_to_hf(model.towers["image"], text, clip.image_proj, clip.text_proj, clip.loss.logit_scale,
                               last if swap else eot, sot)
    if swap:
        emb = state["text_model.embeddings.token_embedding.weight"].clone()
        emb[[eot, last]] = emb[[last, eot]]
        state["text_model.embeddings.token_embedding.weight"] = emb
        tokenizer = swap_token_ids(tokenizer, eot, last)
        text_cfg = config["text_config"]
        for key in ("pad_token_id", "bos_token_id"):
            if text_cfg[key] in (eot, last):
                text_cfg[key] = last if text_cfg[key] == eot else eot
    return config, state, tokenizer


def _json_or_empty(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
