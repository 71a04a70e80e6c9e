"""A LoRA run end to end: it updates only the LoRA factors and the head, `zir train` prints the counts, the
export merges the updates (a plain tower with the same outputs) and a LoRA run can start another run."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import last_weights
from zir.cli import main
from zir.config import from_dict
from zir.eval.run_loading import load_run
from zir.model import build_model
from zir.nn.lora import LoRALinear
from zir.train import save_checkpoint, train
from zir.train.init_weights import init_from
from zir.train.runs import export_run, load

TOWER = {"model": "vit_nano_patch4_32", "img_size": 16}
LORA = {"lora": {"rank": 2, "alpha": 4}}


def recipe(init, adapt: dict | None = LORA, steps: int = 3) -> dict:
    model = {"init": str(init), "towers": {"image": dict(TOWER)}, "objectives": {"supervised": {"num_classes": 5}}}
    if adapt is not None:
        model["adapt"] = adapt
    return {"name": "lora", "model": model, "optim": {"lr": 1e-2, "warmup": 0.0},
            "data": {"source": "shapes", "batch_size": 8, "options": {"n": 32, "size": 16, "objects": [1, 1], "label": "shape"}},
            "train": {"steps": steps, "ckpt_every": 0, "threads": 1}}


@pytest.fixture
def pretrained(tmp_path):
    """A run folder with one checkpoint of a plain tower (seeded apart from the fine-tuning runs)."""
    torch.manual_seed(7)
    model = build_model({"towers": {"image": dict(TOWER)}, "objectives": {"mae": {}}})
    save_checkpoint(tmp_path / "pre" / "checkpoints", 1, model.state_dict(), {"step": 1})
    return tmp_path / "pre", {k: v for k, v in model.state_dict().items() if k.startswith("towers.image.")}


@pytest.fixture
def lora_run(tmp_path, pretrained):
    summary = train(from_dict(recipe(pretrained[0])), tmp_path / "lora", progress=False)
    return tmp_path / "lora", summary


def test_a_lora_run_updates_only_the_lora_factors_and_the_head(lora_run, pretrained):
    run, summary = lora_run
    _, base = pretrained
    state = last_weights(run)
    for key, value in base.items():  # every pretrained weight, norms and biases included, is where it was
        assert torch.equal(state[key], value), key
    changed = {k for k in state if k.endswith(("lora_a", "lora_b", "head.fc.weight", "head.fc.bias"))}
    assert all(state[k].any() for k in changed if k.endswith("lora_b"))  # lora_b started at zero and moved
    assert summary["trainable_params"] == sum(state[k].numel() for k in changed if "lora_scale" not in k) == 4096 + 325
    assert summary["total_params"] > 20 * summary["trainable_params"]


def test_export_merges_lora_into_a_plain_tower_with_the_same_outputs(lora_run, pretrained, tmp_path):
    run, _ = lora_run
    adapted = load_run(run).model
    path = export_run(run, tmp_path / "export")
    assert not any(k.endswith(("lora_a", "lora_b", "lora_scale")) for k in load_file(str(path)))
    assert "adapt" not in yaml.safe_load(path.with_name("config.yaml").read_text())["model"]
    plain = load(path)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = adapted.towers["image"].forward_tokens(x)
        assert torch.allclose(plain.towers["image"].forward_tokens(x), want, atol=1e-5)
        before = build_model({"towers": {"image": dict(TOWER)}, "objectives": {"mae": {}}}).eval().towers["image"]
        before.load_state_dict({k[len("towers.image."):]: v for k, v in pretrained[1].items()})
        assert (want - before.forward_tokens(x)).abs().max() > 1e-3  # the updates moved it from the pretrained tower


def test_a_lora_run_starts_a_plain_run_with_its_merged_weights(lora_run):
    run, _ = lora_run
    adapted = load_run(run).model
    torch.manual_seed(3)
    plain = build_model({"towers": {"image": dict(TOWER)}, "objectives": {"supervised": {"num_classes": 5}}}).eval()
    assert init_from(plain, str(run)) == {"image": "image"}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain.towers["image"].forward_tokens(x), adapted.towers["image"].forward_tokens(x), atol=1e-5)


def test_zir_train_prints_the_trainable_and_total_parameters(tmp_path, pretrained, capsys):
    path = tmp_path / "bitfit.yaml"
    path.write_text(yaml.safe_dump(recipe(pretrained[0], adapt=None, steps=1)))
    assert main(["train", str(path), "model.adapt.trainable=bias", "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    line = next(t for t in captured.out.splitlines() if "parameters" in t)
    assert "trainable of" in line and "%" in line
    assert "parameters:" in captured.err and "trainable of" in captured.err


def test_the_shipped_lora_recipe_prints_its_counts(tmp_path, capsys):
    from helpers import REPO

    torch.manual_seed(0)
    pre = build_model({"towers": {"image": {"model": "vit_micro_patch4_32"}}, "objectives": {"mae": {}}})
    save_checkpoint(tmp_path / "pre" / "checkpoints", 1, pre.state_dict(), {"step": 1})
    argv = ["train", str(REPO / "configs" / "finetune_lora.yaml"), f"model.init={tmp_path / 'pre'}", "train.steps=1",
            "train.ckpt_every=0", "train.threads=1", "train.precision=fp32", "data.batch_size=8", "data.options.n=16",
            "--out", str(tmp_path / "lora"), "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "parameters: 33,413 trainable of 841,477 (3.97%)" in captured.err  # 32 LoRA factors of rank 4 + the head
    assert "33,413 trainable of 841,477" in captured.out
