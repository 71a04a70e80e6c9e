"""The main job on built-in data, for `make demo` / `zir demo`.

Until the training engine and the unified recipe land, this is a short real training run of a zoo ViT:
supervised classification of the built-in `digits` (scikit-learn's 1,797 real 8x8 scans, resized to 32x32;
70/15/15 stratified splits), compared with the same tower at random initialisation by k-NN on frozen features and by its
classifier. It prints the tables and writes the weights (safetensors) and `results.json` into the run folder.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zir.data.builtin import digits
from zir.errors import ConfigError
from zir.eval.knn import evaluate_knn
from zir.models import count_parameters, create_model, save_weights
from zir.report_tables import TextTable

MEAN, STD = 0.5, 0.25


def _tensors(split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of zir's built-in `digits` as (N, 3, 32, 32) normalised images and (N,) labels."""
    source = digits(split, size=32, seed=seed)
    images = torch.from_numpy(source.images).permute(0, 3, 1, 2).float() / 255.0
    return ((images - MEAN) / STD).contiguous(), torch.from_numpy(source.labels())


@torch.no_grad()
def _evaluate(model: torch.nn.Module, train_x, train_y, test_x, test_y) -> dict[str, float]:
    """Classifier top-1 and k-NN top-1 (frozen pooled features) on the test split, in percent."""
    model.eval()
    feats = [model.forward_head(model.forward_tokens(x), pre_logits=True) for x in (train_x, test_x)]
    logits = model.head(feats[1])
    top1 = (logits.argmax(1) == test_y).float().mean().item() * 100
    knn = evaluate_knn(F.normalize(feats[0], dim=1), train_y, F.normalize(feats[1], dim=1), test_y)
    return {"classifier_top1": top1, "knn_top1": knn["top1"]}


def run_demo(
    out_dir: str | Path = "runs/demo",
    steps: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    model_name: str = "vit_nano_patch4_32",
    lr: float = 1e-3,
) -> dict:
    """Train `model_name` for `steps` steps on digits, evaluate against random init, save and print results."""
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1; got {steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train_x, train_y = _tensors("train", seed)
    test_x, test_y = _tensors("test", seed)
    num_classes = 10
    model = create_model(model_name, num_classes=num_classes)
    before = _evaluate(model, train_x, train_y, test_x, test_y)

    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n not in model.no_weight_decay()]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n in model.no_weight_decay()]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.999))
    warmup = max(1, steps // 10)
    schedule = lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed)

    log = TextTable(title=f"Training {model_name} on digits (32x32, {num_classes} classes)",
                    columns=["step", "loss", "batch acc %", "lr", "img/s"])
    model.train()
    started = time.perf_counter()
    seen = 0
    for step in range(steps):
        index = torch.randint(0, len(train_x), (batch_size,), generator=generator)
        x, y = train_x[index], train_y[index]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        seen += batch_size
        if step % max(1, steps // 6) == 0 or step == steps - 1:
            acc = (logits.argmax(1) == y).float().mean().item() * 100
            rate = seen / (time.perf_counter() - started)
            log.rows.append([str(step + 1), f"{loss.item():.3f}", f"{acc:.1f}",
                             f"{scheduler.get_last_lr()[0]:.2e}", f"{rate:.0f}"])
    seconds = time.perf_counter() - started
    after = _evaluate(model, train_x, train_y, test_x, test_y)

    chance = 100.0 / num_classes
    summary = TextTable(title=f"Test split ({len(test_y)} images): trained vs random initialisation",
                        columns=["metric", "random init", "trained", "chance"],
                        caption=f"{count_parameters(model_name, num_classes=num_classes):,} parameters, "
                                f"{steps} steps of batch {batch_size} in {seconds:.0f} s "
                                f"({seen / seconds:.0f} img/s on this machine).")
    summary.rows.append(["classifier top-1 %", f"{before['classifier_top1']:.1f}", f"{after['classifier_top1']:.1f}", f"{chance:.1f}"])
    summary.rows.append(["k-NN top-1 % (k=20)", f"{before['knn_top1']:.1f}", f"{after['knn_top1']:.1f}", f"{chance:.1f}"])

    weights = save_weights(model, out / "weights.safetensors")
    results = {"model": model_name, "steps": steps, "batch_size": batch_size, "seconds": seconds,
               "images_per_second": seen / seconds, "random_init": before, "trained": after,
               "chance_top1": chance, "dataset": f"digits (train {len(train_y)} / test {len(test_y)}, 32x32)"}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.print()
    summary.print()
    print(f"Weights: {weights}\nResults: {out / 'results.json'}")
    return results
