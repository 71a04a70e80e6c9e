"""The k-NN monitor (`train.monitor_every`): a `knn_top1` column on every N-th step of metrics.csv, equal to what
`zir eval --tasks knn` scores on the checkpoint of that step, without changing a single loss of the run."""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from zir.config import load_config
from zir.errors import ConfigError
from zir.eval.report import _curves, curve_panels, read_metrics
from zir.eval.run_eval import evaluate_run
from zir.train import list_checkpoints, train
from zir.train.progress import Progress

SAMPLES = 120  # 60 bank images of shapes:train against 60 queries of shapes:test


# SimCLR on a 2-block ViT with drop path (the training draws from the global RNG every step), 16 a batch, 4 steps
TINY = ["model.towers.image={model: vit_nano_patch4_32, drop_path_rate: 0.2}", "model.objectives.simclr.hidden_dim=64",
        "model.objectives.simclr.out_dim=32", "data.batch_size=16", "data.options={n: 64, size: 32}", "optim.lr=0.01",
        "optim.warmup=0", "train.steps=4", "train.threads=1", "train.precision=fp32",
        f"train.monitor_samples={SAMPLES}"]


def tiny(*overrides: str):
    return load_config("simclr", [*TINY, *overrides])


def rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A 4-step run monitored every 2 steps, with a checkpoint at each monitored step."""
    run = tmp_path_factory.mktemp("monitored") / "run"
    train(tiny("train.monitor_every=2", "train.ckpt_every=2", "train.keep_last=5"), run, progress=False)
    return run


def test_the_knn_column_holds_a_value_on_every_nth_step_only(monitored):
    got = {int(r["step"]): r["knn_top1"] for r in rows(monitored)}
    assert sorted(got) == [1, 2, 3, 4]
    assert got[1] == got[3] == ""
    assert all(0 <= float(got[s]) <= 100 for s in (2, 4))


def test_the_logged_accuracy_equals_zir_eval_knn_on_the_checkpoint_of_that_step(monitored, tmp_path):
    logged = {int(r["step"]): r["knn_top1"] for r in rows(monitored) if r["knn_top1"]}
    offline = {}
    for checkpoint in list_checkpoints(monitored / "checkpoints"):
        alone = tmp_path / checkpoint.name  # a run folder holding only this checkpoint: zir eval reads its newest
        (alone / "checkpoints").mkdir(parents=True)
        shutil.copy(monitored / "config.yaml", alone / "config.yaml")
        shutil.copytree(checkpoint, alone / "checkpoints" / checkpoint.name)
        result = evaluate_run(alone, tasks="knn", limit=SAMPLES // 2, write=False)["knn"]
        assert (result["k"], result["T"], result["n_train"], result["n_test"]) == (20, 0.07, 60, 60)
        offline[result["step"]] = f"{result['top1']:.6g}"  # metrics.csv writes 6 significant digits
    assert logged == offline
    assert len(set(offline.values())) == 2  # the two checkpoints score differently: a wrong step would show


def test_the_progress_line_shows_the_newest_measurement(capsys):
    trainer = SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(log_every=10)), total_steps=100, budget=None)
    show = Progress(trainer, enabled=False)  # plain lines every 10 steps, and at each monitored step
    row = {"loss": 1.5, "lr": 1e-3, "samples_per_s": 100.0}
    for step in range(1, 11):
        show.update(step, {**row, "knn_top1": 21.25} if step == 3 else row)
    assert capsys.readouterr().out.splitlines() == [
        "step 3/100  loss 1.5  lr 1.00e-03  100 samples/s  knn 21.2%",
        "step 10/100  loss 1.5  lr 1.00e-03  100 samples/s  knn 21.2%"]


def test_the_report_plots_the_knn_column_first_and_names_its_newest_value(monitored, tmp_path):
    columns = read_metrics(monitored / "metrics.csv")
    columns.update({f"metric_{i}": [float(i + s) for s in range(4)] for i in range(12)})  # more than the 11 panels
    columns["knn_top1"] = [float("nan"), 30.0, float("nan"), float("nan")]  # one measurement, not on the last row
    assert [title for title, _ in curve_panels(columns)][:2] == ["losses", "knn_top1"]
    (tmp_path / "metrics.csv").write_text("step,loss,knn_top1\n1,2.0,\n2,1.5,30\n3,1.2,\n")
    assert "last: knn_top1 30, loss 1.2." in _curves(tmp_path)


def _weights(run):
    return load_file(str(list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))


def test_monitoring_changes_no_loss_and_no_weight(monitored, tmp_path):
    plain = tmp_path / "plain"
    train(tiny("train.ckpt_every=2", "train.keep_last=5"), plain, progress=False)
    columns = ("loss", "simclr_loss", "grad_norm")
    assert [[r[c] for c in columns] for r in rows(plain)] == [[r[c] for c in columns] for r in rows(monitored)]
    want, got = _weights(plain), _weights(monitored)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("override, message", [
    ("train.monitor_every=-1", "train.monitor_every=-1: expected a whole number >= 0 (0: no k-NN monitor)"),
    ("train.monitor_samples=1", "train.monitor_samples=1: expected a whole number from 2 to 5000"),
    ("train.monitor_samples=100000", "train.monitor_samples=100000: expected a whole number from 2 to 5000"),
    ("train.monitor_k=0", "train.monitor_k=0: expected a whole number from 1 to train.monitor_samples / 2 = 60"),
    ("train.monitor_k=61", "train.monitor_k=61: expected a whole number from 1 to train.monitor_samples / 2 = 60"),
    ("train.monitor_temperature=0", "train.monitor_temperature=0.0: expected a number > 0"),
    ("train.monitor_every=x", "train.monitor_every='x': expected a whole number"),
])
def test_bad_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        tiny(override)
    assert message in str(err.value) and "\n" not in str(err.value)


def _folder(root, classes: dict[str, int]):
    """A folder of plain PNGs: `{"": n}` puts n images at the top (unlabelled), other keys are class sub-folders."""
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (40 * i % 255, 90, 160)).save(root / name / f"{i}.png")
    return root


def test_data_the_monitor_cannot_use_is_a_one_line_error_before_the_first_step(tmp_path):
    unlabelled = _folder(tmp_path / "plain", {"": 12})
    labelled = _folder(tmp_path / "classes", {"a": 5, "b": 5})  # 80/20: an 8-image bank
    cases = [
        (["train.monitor_every=2", f"train.monitor_data=unlabeled:{unlabelled}"],
         f"train.monitor_data='unlabeled:{unlabelled}': unlabeled:{unlabelled} has no class labels, which a k-NN "
         "monitor needs"),
        (["train.monitor_every=2", f"data.source=unlabeled:{unlabelled}", "data.options={}"],
         f"train.monitor_every=2: unlabeled:{unlabelled} has no class labels, which a k-NN monitor needs; name a "
         "labelled source, e.g. train.monitor_data=shapes"),
        (["train.monitor_every=2", f"train.monitor_data={labelled}"],
         f"train.monitor_k=20: larger than the 8 samples of the k-NN bank ({labelled}:80%)"),
        (["train.monitor_every=2", "train.monitor_data=no_such_data"], "train.monitor_data='no_such_data': data source"),
    ]
    for i, (overrides, message) in enumerate(cases):
        run = tmp_path / f"run{i}"
        with pytest.raises(ConfigError) as err:
            train(tiny(*overrides), run, progress=False)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not (run / "metrics.csv").exists()


DDP_WORKER = '''
import csv, os
from zir.config import load_config
from zir.train import train

train(load_config("simclr", {overrides!r} + ["train.monitor_every=2"]), "run", progress=False)
rank = int(os.environ["RANK"])
verdict = "OK"
if rank == 0:
    knn = [r["knn_top1"] for r in csv.DictReader(open("run/metrics.csv"))]
    if [bool(v) for v in knn] != [False, True, False, True]:
        verdict = "FAIL knn_top1 " + repr(knn)
open(f"rank{{rank}}.result", "w").write(verdict)
'''


@pytest.mark.long(seconds=19)
def test_under_ddp_rank_0_monitors_while_the_other_rank_goes_on(run_two_ranks):
    """Two gloo processes: the run finishes (rank 1 waits for rank 0's measurement in the next step's collective)
    and rank 0 logs knn_top1 on steps 2 and 4."""
    assert run_two_ranks(DDP_WORKER.format(overrides=TINY)) == ["OK", "OK"]
