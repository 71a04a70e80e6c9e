"""Every shipped recipe trains under DDP and FSDP with two gloo processes, and two processes follow one.

One torchrun launch per strategy trains all recipes at tiny size (tests/train/train_recipes_worker.py writes a
verdict file per recipe). CLIP (resumed and exported) and DINO, on views that do not depend on which
samples share a batch, must give the one-process losses and weights at the same global batch.
"""

from __future__ import annotations

import json
import math
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import PY, env, last_weights
from train_recipes_worker import run_recipe, shipped_recipes, write_pairs
from zir.train import list_checkpoints

COMPARED = ["clip@resume", "dino@match"]  # a cross-modal and a self-supervised recipe against one process


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    write_pairs(out)
    return out, {spec: run_recipe(spec, out) for spec in COMPARED}


def test_shipped_recipes_are_found():
    names = shipped_recipes()
    assert {"clip", "siglip", "coca", "slip", "lit", "unified", "dino", "mae", "simmim_swin", "finetune"} <= set(names)
    assert not any(n.endswith("tokenizer") for n in names)


def launch(out: Path, strategy: str, recipes: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    """One torchrun job of two gloo processes training every recipe into `out`; its verdict files by name."""
    out.mkdir(parents=True)
    write_pairs(out)
    done = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).with_name("train_recipes_worker.py")), str(out), strategy, *recipes, *COMPARED],
                          env=env(), capture_output=True, text=True, timeout=540)
    return done, {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def gloo_aborted(done: subprocess.CompletedProcess, verdicts: dict) -> bool:
    """A rank killed by SIGABRT while no recipe reported a Python error. Seen once, in a loaded CI run, during the
    FSDP job's first recipe (audio_mae, 2 steps); not reproduced in 18 launches alone or beside a training. An
    abort from C++ (gloo's TCP transport aborts so: pytorch/gloo#514) says nothing about the recipes; the worker's
    faulthandler prints the Python stacks of the aborting rank, kept in the warning."""
    return done.returncode != 0 and "Signal 6 (SIGABRT)" in done.stderr and all(v["ok"] for v in verdicts.values())


@pytest.mark.parametrize("strategy", [pytest.param("ddp", marks=pytest.mark.long(seconds=47)),
                                      pytest.param("fsdp", marks=pytest.mark.long(seconds=96))])
def test_every_recipe_trains_under_two_gloo_processes(tmp_path, one_process, strategy):
    recipes = shipped_recipes()
    run_dir = tmp_path / "first"
    done, verdicts = launch(run_dir, strategy, recipes)
    if gloo_aborted(done, verdicts):  # one retry, on a fresh folder; the first try's stacks stay in the warning
        warnings.warn(f"a rank aborted (SIGABRT) with no Python error; retried once. Its stderr:\n{done.stderr[-4000:]}")
        run_dir = tmp_path / "again"
        done, verdicts = launch(run_dir, strategy, recipes)
    failed = {k: v["error"] for k, v in verdicts.items() if not v["ok"]}
    if done.returncode != 0 or failed:
        pytest.fail(f"failed recipes: {failed}; torchrun exit {done.returncode}; stderr:\n{done.stderr[-4000:]}",
                    pytrace=False)
    for name in recipes + COMPARED:
        losses = verdicts[name]["losses"]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses), (name, losses)

    if strategy == "fsdp":  # every block of every tower is its own unit, Swin's and the BERT layers' too
        assert verdicts["simmim_swin"]["units"] == [""] + [f"towers.image.layers.{s}.blocks.{b}" for s, n in
                                                          enumerate([2, 2, 6, 2]) for b in range(n)]
        assert {"towers.image.blocks.3", "towers.text.encoder.layer.5"} <= set(verdicts["lit"]["units"])

    ref_dir, ref = one_process
    for spec in COMPARED:
        assert verdicts[spec]["losses"] == pytest.approx(ref[spec]["losses"], rel=1e-5), spec
        one, two = last_weights(ref_dir / spec), last_weights(run_dir / spec)
        assert one.keys() == two.keys()
        for key in one:
            assert torch.allclose(one[key], two[key], atol=1e-4), (spec, key, (one[key] - two[key]).abs().max())
    resumed = verdicts["clip@resume"]
    assert len(resumed["resumed_losses"]) == 4 and resumed["resumed_losses"][:2] == resumed["losses"]
    assert resumed["resumed_losses"] == pytest.approx(ref["clip@resume"]["resumed_losses"], rel=1e-5)
    assert resumed["exported"] == {"objectives.clip.loss.logit_scale": [1]}


# -- checkpoints written when the temperatures were 0-d ---------------------------------------------

def test_losses_store_temperature_and_bias_as_one_element_vectors_and_load_0d_ones():
    from zir.losses import ClipLoss, SigLipLoss

    clip, siglip = ClipLoss(0.07), SigLipLoss(0.1, -10.0)
    assert clip.logit_scale.shape == siglip.logit_scale.shape == siglip.logit_bias.shape == (1,)
    clip.load_state_dict({"logit_scale": torch.tensor(3.5)})
    siglip.load_state_dict({"logit_scale": torch.tensor(2.0), "logit_bias": torch.tensor(-4.0)})
    assert clip.logit_scale.tolist() == [3.5] and siglip.logit_scale.tolist() == [2.0] and siglip.logit_bias.tolist() == [-4.0]
    with pytest.raises(RuntimeError, match="size mismatch"):  # only 0-d is taken for (1,), not any other shape
        clip.load_state_dict({"logit_scale": torch.tensor([1.0, 2.0])})


def _as_old_checkpoint(run):
    """Rewrite a run's checkpoint as zir wrote it with 0-d temperature and bias (weights and Adam moments)."""
    from safetensors.torch import save_file

    path = list_checkpoints(run / "checkpoints")[-1]
    weights = load_file(str(path / "model.safetensors"))
    vectors = [k for k in weights if "logit_" in k]
    save_file({k: v.reshape(()) if k in vectors else v for k, v in weights.items()}, str(path / "model.safetensors"),
              metadata={"format": "zir", "step": path.name[5:].lstrip("0")})
    state = torch.load(path / "trainer.pt", weights_only=True)
    moments = [s for s in state["optimizer"]["state"].values() if s["exp_avg"].shape == (1,)]
    for s in moments:
        s["exp_avg"], s["exp_avg_sq"] = s["exp_avg"].reshape(()), s["exp_avg_sq"].reshape(())
    torch.save(state, path / "trainer.pt")
    return len(vectors), len(moments)


def test_a_run_with_0d_temperature_and_bias_resumes_and_exports_as_before(tmp_path):
    import shutil

    from zir.train import resume
    from zir.train.runs import export_run, load

    run_recipe("siglip", tmp_path)
    shutil.copytree(tmp_path / "siglip", tmp_path / "old")
    assert _as_old_checkpoint(tmp_path / "old") == (2, 2)
    assert load_file(str(list_checkpoints(tmp_path / "old" / "checkpoints")[-1] / "model.safetensors"))[
        "objectives.siglip.loss.logit_bias"].shape == ()
    model = load(export_run(tmp_path / "old"))
    bias = model.objectives["siglip"].loss.logit_bias
    assert bias.shape == (1,) and bias.item() == last_weights(tmp_path / "siglip")["objectives.siglip.loss.logit_bias"].item()
    for name in ("siglip", "old"):
        resume(tmp_path / name, ["train.steps=3"], progress=False)
    from train_recipes_worker import losses

    assert len(losses(tmp_path / "old")) == 3 and losses(tmp_path / "old") == losses(tmp_path / "siglip")
    new, old = last_weights(tmp_path / "siglip"), last_weights(tmp_path / "old")
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_only_an_abort_without_a_python_error_is_retried():
    def job(code, stderr):
        return subprocess.CompletedProcess([], code, "", stderr)

    abort = "  traceback : Signal 6 (SIGABRT) received by PID 7"
    assert gloo_aborted(job(1, abort), {"clip": {"ok": True}})
    assert not gloo_aborted(job(1, abort), {"clip": {"ok": False, "error": "ValueError: x"}})  # a recipe's own error
    assert not gloo_aborted(job(1, "ValueError: x"), {})  # any other failure of the job
    assert not gloo_aborted(job(0, abort), {"clip": {"ok": True}})
