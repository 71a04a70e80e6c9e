"""benchmarks/objectives_table.py's cifar10 suite: each self-supervised recipe on the shared tower (with its own
tower options) and CIFAR-10 train, while the shapes and flickr8k suites keep their recipes; its table's rows."""

import importlib.util
import json
from pathlib import Path

import yaml

from zir.config import from_dict

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "objectives_table.py"
_spec = importlib.util.spec_from_file_location("objectives_table", SCRIPT)
table_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table_script)
SHARED = "vit_nano_convstem_patch4_32"


def test_every_ssl_recipe_pretrains_on_cifar10_train_on_the_shared_tower_with_its_own_options(tmp_path):
    for objective in table_script.SSL_OBJECTIVES:
        recipe = table_script.recipe_for(objective, "cifar10", 1, 300, str(tmp_path))
        cfg = from_dict(recipe)
        assert (cfg.data.source, cfg.data.split, cfg.data.options) == ("cifar10", "train", {})
        assert (recipe["train"]["time_budget"], recipe["train"]["budget_clock"], recipe["train"]["seed"]) == (300.0, "cpu", 1)
        image = recipe["model"]["towers"]["image"]
        assert "img_size" not in image  # the tower's own 32x32
        own = {"simmim_swin": "swin_micro_patch2_window4_32", "moco_v3": "vit_nano_patch4_32"}  # Swin; a patch stem
        assert image["model"] == own.get(objective, SHARED), objective
    ijepa = table_script.recipe_for("ijepa", "cifar10", 0, 300, str(tmp_path))["model"]["towers"]["image"]
    assert (ijepa["class_token"], ijepa["global_pool"]) == (False, "avg")
    assert table_script.recipe_for("dinov2", "cifar10", 0, 300, str(tmp_path))["model"]["towers"]["image"]["reg_tokens"] == 4


def test_the_other_suites_keep_their_recipes(tmp_path):
    unified = yaml.safe_load((table_script.RECIPES_DIR / "unified.yaml").read_text())["model"]["towers"]["image"]
    assert unified["model"] == SHARED
    shapes = table_script.recipe_for("simclr", "shapes", 0, 300, str(tmp_path))
    assert shapes["model"]["towers"]["image"] == unified  # the unified recipe's tower as shipped, pooling included
    assert shapes["data"]["source"] == "shapes"
    flickr = table_script.recipe_for("mae", "flickr8k", 0, 300, str(tmp_path))
    at_32 = {k: v for k, v in unified.items() if k != "img_size"}  # the tower's own 32x32
    assert (flickr["model"]["towers"]["image"], flickr["data"]["source"]) == (at_32, "flickr8k")


def test_the_cifar10_table_has_a_row_per_objective_and_the_shared_towers_random_init(tmp_path):
    def write(objective, knn, linear, extra=None):
        run = tmp_path / "cifar10" / f"{objective}-s0"
        run.mkdir(parents=True)
        res = {"objective": objective, "seed": 0, "steps": 100, "batch": 128, "train_cpu_s": 320.0,
               "cifar10": {"knn": {"top1": knn, **(extra or {})}, "linear": {"top1": linear}}}
        (run / "objectives_table.json").write_text(json.dumps(res))

    write("simclr", 40.0, 45.0, {"random_init": {"top1": 30.0}})
    write("byol", 35.5, 41.25)
    rows = table_script.table(tmp_path, "cifar10").splitlines()
    assert rows[0] == "| objective | seeds | steps | samples per s | k-NN | linear |"
    assert rows[2:] == ["| simclr | 1 | 100 | 40 | 40.0 | 45.0 |", "| byol | 1 | 100 | 40 | 35.5 | 41.2 |",
                        "| random init (the shared tower) | 1 | 0 | - | 30.0 | - |"]


def test_the_tables_header_names_the_budget_the_runs_had_not_the_reprinting_calls(tmp_path):
    def finished(name, train):
        run = tmp_path / "shapes" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"train": train}))
        (run / "objectives_table.json").write_text("{}")

    assert table_script.span_of_runs(tmp_path, ["shapes"]) is None  # nothing finished: the caller's own flags
    finished("clip-s0", {"steps": None, "time_budget": 900.0, "budget_clock": "cpu"})
    assert table_script.span_of_runs(tmp_path, ["shapes"]) == "a budget of 900 CPU seconds of training"
    finished("mae-s0", {"steps": 600, "time_budget": None, "budget_clock": "wall"})
    assert table_script.span_of_runs(tmp_path, ["shapes"]) == \
        "600 steps or a budget of 900 CPU seconds of training (runs differ)"
