"""results.json across evaluations on different data: the plain key is the newest result (what the command just
wrote), and once a task meets a second data set each data set's newest result stays under `<task>@<dataset>`."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import tone_folder
from zir.cli import main
from zir.config import load_config
from zir.eval.results_file import merge_results
from zir.eval.run_eval import results_rows
from zir.recipes import RECIPES_DIR
from zir.train import train


def entry(dataset: str, top1: float) -> dict:
    return {"dataset": dataset, "split": "test", "top1": top1}


def test_a_second_data_set_keeps_the_first_under_task_at_dataset():
    one = merge_results({}, {"zeroshot": entry("fsdd", 60.0), "linear": entry("fsdd", 80.0)})
    assert one == {"zeroshot": entry("fsdd", 60.0), "linear": entry("fsdd", 80.0)}  # one data set: one key
    two = merge_results(one, {"zeroshot": entry("av_digits", 40.0)})
    assert two["zeroshot"] == entry("av_digits", 40.0) and two["zeroshot@fsdd"] == entry("fsdd", 60.0)
    assert two["zeroshot@av_digits"] == entry("av_digits", 40.0) and two["linear"] == entry("fsdd", 80.0)
    three = merge_results(two, {"zeroshot": entry("fsdd", 65.0)})  # re-evaluated: each key its newest
    assert three["zeroshot"] == three["zeroshot@fsdd"] == entry("fsdd", 65.0)
    assert three["zeroshot@av_digits"] == entry("av_digits", 40.0) and "linear@fsdd" not in three
    skipped = merge_results(three, {"zeroshot": {"skipped": "no text tower"}})  # an entry naming no data set
    assert skipped["zeroshot"] == {"skipped": "no text tower"} and skipped["zeroshot@fsdd"] == entry("fsdd", 65.0)
    three["zeroshot@av_digits"] = {**entry("av_digits", 40.0), "random_init": {"top1": 10.0}}
    rows = results_rows(three)  # the repeat of the plain key is shown once, each with its random init
    assert rows == [["zeroshot", "fsdd:test", "top1", "65.0", "-"], ["linear", "fsdd:test", "top1", "80.0", "-"],
                    ["zeroshot@av_digits", "av_digits:test", "top1", "40.0", "10.0"]]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A 2-step audio_clip run on one folder of tones, and a second folder of the same classes."""
    root = tmp_path_factory.mktemp("results")
    freqs = {"zero": 300.0, "one": 900.0, "two": 1800.0}
    a, b = tone_folder(root / "a", freqs, per_class=3), tone_folder(root / "b", freqs, per_class=2)
    cfg = load_config(RECIPES_DIR / "audio_clip.yaml", [
        "train.steps=2", "data.batch_size=8", "train.threads=1", "train.ckpt_every=2", "train.keep_last=1",
        "model.towers.audio.model=ast_nano", f"data.source={a}"])
    train(cfg, root / "run", progress=False)
    return root / "run", str(a), str(b)


@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_zir_eval_on_two_data_sets_in_either_order_keeps_both(order, folders, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folders[0], run)
    for i in order:
        assert main(["eval", str(run), "--tasks", "zeroshot", "--data", folders[i], "--no-report"]) == 0
    results = json.loads((run / "results.json").read_text())
    last, first = folders[order[1]], folders[order[0]]
    assert results["zeroshot"]["dataset"] == last and 0 <= results["zeroshot"]["top1"] <= 100  # what it just wrote
    assert results[f"zeroshot@{first}"]["dataset"] == first and results[f"zeroshot@{last}"] == results["zeroshot"]
    assert results[f"zeroshot@{first}"]["n_test"] != results["zeroshot"]["n_test"]  # 20% of 9 vs of 6 clips
