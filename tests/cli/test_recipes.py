"""Shipped recipes and tokenizers are found by name from any folder; a path always wins; a run keeps its tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, one_line_error
from zir.cli import main
from zir.config import load_config
from zir.errors import ConfigError
from zir.eval.run_eval import run_tokenizer
from zir.recipes import RECIPES_DIR, TOKENIZERS_DIR, list_recipes, list_tokenizers, recipe_path, recipe_summary, tokenizer_path

SHIPPED = ["audio_clip", "audio_mae", "barlow_twins", "byol", "clip", "coca", "dino", "dinov2", "finetune", "finetune_lora", "ibot",
           "ijepa", "imagebind", "itm_rerank", "lit", "mae", "moco_v3", "siglip", "simclr", "simmim_swin", "simsiam", "slip", "unified", "vicreg"]
LISTED = ", ".join(SHIPPED)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the checkout, with no configs/ beside it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_package_ships_every_recipe_and_both_tokenizers():
    assert list_recipes() == SHIPPED
    assert list_tokenizers() == ["flickr8k", "fsdd", "shapes"]
    assert RECIPES_DIR.parent.name == "zir" and TOKENIZERS_DIR == RECIPES_DIR / "tokenizers"


def test_the_checkouts_configs_folder_links_every_shipped_recipe():
    # `zir train configs/clip.yaml` (the issues' and older docs' form) reads the shipped recipe in a checkout
    configs = REPO / "configs"
    links = sorted(p.name for p in configs.glob("*.yaml"))
    assert links == sorted(f"{name}.yaml" for name in list_recipes())
    for name in links:
        assert (configs / name).is_symlink() and (configs / name).resolve() == (RECIPES_DIR / name).resolve()
    assert load_config(str(configs / "clip.yaml")).name == "clip"


def test_a_shipped_name_is_found_from_any_folder(elsewhere):
    assert recipe_path("clip") == RECIPES_DIR / "clip.yaml"
    cfg = load_config("clip", ["train.steps=3"])
    assert cfg.name == "clip" and cfg.train.steps == 3 and cfg.data.tokenizer == "shapes"
    assert tokenizer_path("shapes") == TOKENIZERS_DIR / "shapes.json"


def test_an_existing_file_wins_over_a_shipped_name(elsewhere):
    (elsewhere / "clip").write_text((RECIPES_DIR / "mae.yaml").read_text().replace("name: mae", "name: mine"))
    assert recipe_path("clip") == Path("clip")
    assert load_config("clip").name == "mine"
    (elsewhere / "shapes").write_text("{}")
    assert tokenizer_path("shapes").resolve() == elsewhere / "shapes"


def test_an_unknown_recipe_is_one_line_with_the_shipped_names_and_the_closest(elsewhere, capsys):
    assert main(["train", "clp", "--out", "run"]) == 2
    assert one_line_error(capsys) == (f"recipe clp does not exist: neither a file nor a shipped recipe ({LISTED}) "
                                 "(did you mean clip?)")
    assert main(["train", "configs/dinov2.yaml"]) == 2  # the old checkout path points at the shipped name
    assert one_line_error(capsys).endswith("(did you mean dinov2?)")
    assert not (elsewhere / "run").exists()
    with pytest.raises(ConfigError, match=rf"^recipe zzz does not exist: neither a file nor a shipped recipe \({LISTED}\)$"):
        recipe_path("zzz")


def test_an_unknown_tokenizer_is_one_line(elsewhere, capsys):
    argv = ["train", "clip", "data.tokenizer=configs/shapes_tokenizer.json", "train.steps=1", "--out", "run"]
    assert main(argv) == 2
    assert one_line_error(capsys) == ("data.tokenizer=configs/shapes_tokenizer.json: no such file and not a shipped "
                                 "tokenizer (flickr8k, fsdd, shapes) (did you mean shapes?)")
    assert not (elsewhere / "run").exists()


def test_recipes_lists_each_with_its_first_sentence_and_prints_a_path(elsewhere, capsys):
    assert recipe_summary("mae") == ("MAE (He et al. 2022): hide 75% of the patches, encode only the visible quarter, "
                                     "reconstruct the hidden pixels (normalised per patch)")
    assert recipe_summary("dino") == "DINO (Caron et al. 2021): self-distillation from an EMA teacher"
    assert recipe_summary("lit").endswith("(the paper's \"uL\" setting; its headline locks a pretrained image tower instead)")
    from zir.report_tables import recipes_table

    table = recipes_table()
    assert [row[0] for row in table.rows] == SHIPPED and all(row[1] for row in table.rows)
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(f" {name} " in listing for name in SHIPPED)
    assert main(["recipes", "--path", "coca"]) == 0
    assert capsys.readouterr().out == f"{RECIPES_DIR / 'coca.yaml'}\n"
    assert main(["recipes", "--path", "cocoa"]) == 2
    assert one_line_error(capsys).endswith("(did you mean coca?)")


def test_every_shipped_recipe_names_its_tokenizer_by_shipped_name():
    for name in SHIPPED:
        tokenizer = (yaml.safe_load(recipe_path(name).read_text()).get("data") or {}).get("tokenizer")
        assert tokenizer in (None, "shapes", "fsdd"), (name, tokenizer)


def test_every_shipped_recipe_chooses_bf16_where_the_processor_has_it():
    """`precision: auto` in each, so equal-time comparisons between recipes are not skewed by precision."""
    for name in list_recipes():
        assert load_config(name).train.precision == "auto", name


def test_a_run_keeps_its_tokenizer_so_eval_reads_it_from_any_folder(elsewhere, tmp_path_factory, monkeypatch):
    tiny = ["train.steps=1", "data.batch_size=4", "data.options.n=8", "train.threads=1", "train.ckpt_every=1",
            "model.towers.image.model=vit_nano_patch4_32", "model.towers.text.model=text_nano"]
    assert main(["train", "clip", *tiny, "--out", "run", "--no-progress"]) == 0
    run = elsewhere / "run"
    assert (run / "tokenizer.json").read_bytes() == (TOKENIZERS_DIR / "shapes.json").read_bytes()
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["tokenizer"] == "shapes"
    monkeypatch.chdir(tmp_path_factory.mktemp("another"))
    tok = run_tokenizer(run, {"data": {"tokenizer": "shapes"}}, torch.nn.Module())
    assert tok.vocab_size == 435


def test_eval_resolves_a_shipped_tokenizer_name_of_a_run_without_its_copy(elsewhere):
    tok = run_tokenizer(elsewhere, {"data": {"tokenizer": "shapes"}}, torch.nn.Module())
    assert tok is not None and tok.vocab_size == 435 and tok.context_length == 32


def test_the_demo_takes_the_packaged_recipe_and_tokenizer(elsewhere):
    from zir.demo import _recipe_files

    assert _recipe_files() == (RECIPES_DIR / "unified.yaml", TOKENIZERS_DIR / "shapes.json")
    assert all(path.is_file() for path in _recipe_files())
