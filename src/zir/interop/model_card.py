"""The README.md model card of `zir export --format hf`: what was trained on what, for how long, how it scored,
under which licence, and how to load it (with zir, and with transformers where the layout is theirs)."""

from __future__ import annotations

import yaml

HF_CLASSES = {"clip": "CLIPModel", "vit": "ViTModel", "dinov2": "Dinov2Model",
              "dinov2_with_registers": "Dinov2WithRegistersModel"}


def _results_table(results: dict) -> str:
    from zir.eval.run_eval import results_rows

    rows = results_rows(results)
    if not rows:
        return "Not evaluated (run `zir eval RUN` before exporting to include the results table).\n"
    lines = ["| task | data | metric | trained | random init |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\nAccuracies and recalls in percent (`zir eval`).\n"


def model_card(raw: dict, step: int, kind: str, license: str, results: dict, why: str = "") -> str:
    """Markdown with a YAML header (licence, library, tags) for a run exported as `kind` (a model_type or zir)."""
    model = raw.get("model") or {}
    data = raw.get("data") or {}
    objectives = model.get("objectives") or {}
    towers = model.get("towers") or {}
    library = "transformers" if kind in HF_CLASSES else "open_clip" if kind == "open_clip" else "zir"
    header = {"license": license, "library_name": library,
              "tags": ["zir", *sorted(map(str, objectives))]}
    name = raw.get("name", "run")
    parts = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "", f"# {name}", "",
             f"Trained with zir; exported at step {step} as `{kind}`"
             + (f" (zir's own layout: {why})" if why else "") + ".", "",
             "## Recipe", "", "```yaml", yaml.safe_dump({"model": {"towers": towers, "objectives": objectives}},
                                                       sort_keys=False).strip(), "```", "",
             "## Data", "", f"source `{data.get('source', '?')}`, split `{data.get('split', 'train')}`, "
             f"batch {data.get('batch_size', '?')}, tokenizer `{data.get('tokenizer') or '-'}`, options "
             f"`{data.get('options') or {}}`; {step} optimizer steps.", "",
             "## Results", "", _results_table(results), "## Licence", "",
             f"`{license}` (set with `zir export RUN --format hf --license NAME`; the data's terms apply too).", "",
             "## How to load", "", "```python", "import zir", "", "model = zir.load(\"THIS_FOLDER\")"]
    if kind in ("clip", "open_clip"):
        parts += ["image_features = model.encode_image(images)   # (B, 3, H, W), normalised as in training",
                  "text_features = model.encode_text([\"a photo of a cat\"])"]
    elif kind in HF_CLASSES:
        parts += ["features = model.encode_image(images)   # the final-normed CLS token"]
    parts += ["```", ""]
    if kind in HF_CLASSES:
        parts += ["With transformers:", "", "```python", f"from transformers import {HF_CLASSES[kind]}", "",
                  f"model = {HF_CLASSES[kind]}.from_pretrained(\"THIS_FOLDER\")", "```", ""]
    return "\n".join(parts)
