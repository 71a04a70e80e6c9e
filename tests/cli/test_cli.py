"""The command line: `zir models`, `zir demo`, and one-line errors."""

import json
import subprocess
import sys

import zir
import zir.demo
from zir.cli import main
from zir.report_tables import models_table


def test_models_table_rows_carry_exact_counts_and_flops():
    table = models_table("vit_base_patch16_224")
    assert table.columns == ["name", "params", "GFLOPs", "input", "patch"]
    assert table.rows == [["vit_base_patch16_224", "86,567,656", "35.13", "224", "16"]]
    assert "FlopCounterMode" in table.caption and "2 x multiply-adds" in table.caption


def test_models_table_covers_text_towers():
    table = models_table("text_nano")
    name, params, gflops, shown_input, patch = table.rows[0]
    assert name == "text_nano" and shown_input == "16 tokens" and patch == "-"
    assert gflops == f"{zir.models.count_flops('text_nano') / 1e9:.2f}" and zir.models.count_flops("text_nano") > 0
    assert int(params.replace(",", "")) == zir.count_parameters("text_nano")


def test_models_command_prints_the_matching_models(capsys):
    assert main(["models", "deit_tiny*", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "deit_tiny_distilled_patch16_224" in out and "5,910,800" in out and "vit_base" not in out


def test_errors_are_one_line_without_traceback():
    result = subprocess.run([sys.executable, "-m", "zir", "models", "resnet*"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "zir: error: no model matches 'resnet*'; `zir models` lists them all"
    assert "Traceback" not in result.stderr


def test_demo_trains_the_unified_recipe_evaluates_it_and_writes_the_report(tmp_path, capsys):
    results = zir.demo.run_demo(out_dir=tmp_path / "demo", steps=2, batch_size=8, model_name="vit_nano_patch4_32",
                                limit=24, threads=1, probe_options={"Cs": (1.0,), "max_iter": 50}, progress=False)
    run = tmp_path / "demo"
    assert results["run"] == str(run) and results["steps"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002"]
    assert (run / "export" / "model.safetensors").is_file() and (run / "tokenizer.json").is_file()
    saved = json.loads((run / "results.json").read_text())
    assert {"zeroshot", "retrieval", "linear", "knn"} <= set(saved)
    for task in ("zeroshot", "linear", "knn"):
        for entry in (saved[task], saved[task]["random_init"]):
            assert 0.0 <= entry["top1"] <= 100.0
    assert "i2t_R@1" in saved["retrieval"] and "i2t_R@1" in saved["retrieval"]["random_init"]
    report = run / "report.html"
    assert results["report"] == str(report) and report.stat().st_size > 1000
    out = capsys.readouterr().out
    assert zir.demo.TITLE in out and "random init" in out
    for task in ("zeroshot", "retrieval", "linear", "knn"):
        assert task in out
    assert str(report) in out and str(run / "results.json") in out
    # a second demo into the same folder goes beside it instead of failing
    again = zir.demo.run_demo(out_dir=run, steps=1, batch_size=8, model_name="vit_nano_patch4_32", limit=24,
                              threads=1, probe_options={"Cs": (1.0,), "max_iter": 50}, progress=False)
    assert again["run"] == str(tmp_path / "demo-2")


def test_demo_rejects_a_bad_step_count(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_data_inspect_prints_counts_and_writes_the_grid(tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert main(["data", "inspect", "digits", "--png", str(png), "--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "digits:train" in out and "read 200, usable 200" in out and "bad data    none" in out
    assert png.is_file() and png.stat().st_size > 1000


def test_data_inspect_names_an_unknown_source(capsys):
    assert main(["data", "inspect", "no_such_dataset"]) == 2
    assert "no_such_dataset" in capsys.readouterr().err


def test_data_tokenizer_trains_a_bpe_on_a_sources_captions(tmp_path, capsys):
    from zir.data import load_tokenizer

    out = tmp_path / "tok.json"
    assert main(["data", "tokenizer", "shapes:val", "--out", str(out), "--vocab-size", "300", "--context-length", "16"]) == 0
    assert "300 tokens" in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert tok.vocab_size == 300 and tok.encode(["a red circle"]).shape == (1, 16)
    assert tok.decode(tok.encode(["a red circle above"]))[0].strip() == "a red circle above"


def test_data_tokenizer_refuses_a_vocabulary_smaller_than_the_bytes(tmp_path, capsys):
    assert main(["data", "tokenizer", "shapes:val", "--out", str(tmp_path / "t.json"), "--vocab-size", "100"]) == 2
    err = capsys.readouterr().err
    assert "vocab_size=100: expected at least 259" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.json").exists()
