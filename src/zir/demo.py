"""The main job, for `make demo` / `zir demo`: the unified recipe on built-in shapes, against random init.

Trains the shipped `unified` recipe (`zir recipes --path unified`) as it is (CLIP + CoCa captioning + MAE +
masked self-distillation on one shared conv-stem ViT and a small text tower) on built-in `shapes` with
captions, for a few CPU-minutes,
evaluates the run with `zir.eval.run_eval.evaluate_run` (zero-shot classification, image-text retrieval,
linear probe and k-NN) beside the same towers at random initialisation, prints one table, exports the
weights and writes the HTML report into the run folder. The result is deterministic for a given processor
and thread count (one by default: these tiny towers gain nothing from more, and OpenMP threads on a busy
machine slow them down; the recipe's `precision: auto` trains in bf16 where the processor has it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from zir.errors import ConfigError


def _recipe_files() -> tuple[Path, Path]:
    """The shipped unified recipe and shapes tokenizer, inside the installed package (any working directory)."""
    from zir.recipes import RECIPES_DIR, TOKENIZERS_DIR

    return RECIPES_DIR / "unified.yaml", TOKENIZERS_DIR / "shapes.json"


def _free_folder(out: Path) -> Path:
    """`out` as the user gave it, or its siblings out-2, out-3, ... when `out` already holds a run."""
    if out.name in ("", ".", ".."):  # `.`, `/`, `runs/..`: number the folder they stand for, beside it
        out = Path(os.path.abspath(out))
    base, i = out, 1
    while (out / "config.yaml").exists() or (out / "metrics.csv").exists() or (out / "checkpoints").exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


DEFAULT_STEPS = 600
TITLE = "unified (CLIP + CoCa + MAE + masked self-distillation) on shapes"


def run_demo(
    out_dir: str | Path = "runs/demo",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int | None = None,
    model_name: str | None = None,
    limit: int = 500,
    threads: int | None = 1,
    probe_options: dict | None = None,
    progress: bool | None = None,
) -> dict:
    """Train the unified recipe for `steps` steps on shapes, evaluate it against random init, print and save.

    `batch_size` and `model_name` change the recipe's batch and image tower (the tests make the demo tiny)."""
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1; got {steps}")
    if limit < 2:
        raise ConfigError(f"limit must be at least 2 samples per split; got {limit}")
    from zir.eval.report import write_report
    from zir.eval.run_eval import evaluate_run, results_table
    from zir.train import train
    from zir.train.runs import export_run

    recipe, tokenizer = _recipe_files()
    out = _free_folder(Path(out_dir))
    overrides = [f"train.steps={steps}", f"train.seed={seed}", f"data.tokenizer={tokenizer}", "train.ckpt_every=0",
                 "train.keep_last=1", f"train.log_every={max(1, steps // 10)}"]
    if batch_size:
        overrides.append(f"data.batch_size={batch_size}")
    if model_name:
        overrides.append(f"model.towers.image={{model: {model_name}}}")
    if threads:
        overrides.append(f"train.threads={threads}")
    started = time.perf_counter()
    summary = train(recipe, out, overrides, progress=progress)
    trained_s = time.perf_counter() - started
    weights = export_run(out)

    started = time.perf_counter()
    results = evaluate_run(out, limit=limit, baseline=True, probe_options=probe_options)
    evaluated_s = time.perf_counter() - started
    report = write_report(out)

    table = results_table(results, title=f"{TITLE}, {steps} steps: trained vs random initialisation")
    table.caption = (f"accuracies and recalls in percent on up to {limit} test images; trained {trained_s:.0f} s, "
                     f"evaluated {evaluated_s:.0f} s on this machine")
    table.print()
    print(f"Run:     {out}\nResults: {out / 'results.json'}\nWeights: {weights}\nReport:  {report}")
    return {"run": str(out), "steps": summary["steps"], "train_seconds": trained_s, "eval_seconds": evaluated_s,
            "results": results, "weights": str(weights), "report": str(report)}
