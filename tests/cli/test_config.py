"""Recipe configs: YAML plus dotted overrides into typed sections; errors name the field, value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from zir.config import Config, apply_overrides, from_dict, load_config, save_config
from zir.errors import ConfigError

BASE = {"name": "t", "model": {"towers": {"image": {"model": "vit_nano_patch4_32"}}, "objectives": {"mae": {"weight": 1.0}}},
        "train": {"steps": 10}}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def test_overrides_are_typed_and_reach_every_section(recipe):
    cfg = load_config(recipe, ["optim.lr=5e-4", "data.batch_size=128", "train.steps=50", "optim.betas=[0.9, 0.95]",
                               "optim.clip_grad=null", "train.compile=true", "model.objectives.mae.mask_ratio=0.6",
                               "data.options.n=64", "name=short"])
    assert isinstance(cfg, Config) and cfg.name == "short"
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)  # YAML reads 5e-4 as a string
    assert cfg.data.batch_size == 128 and cfg.train.steps == 50 and cfg.train.compile is True
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.clip_grad is None
    assert cfg.model["objectives"]["mae"] == {"weight": 1.0, "mask_ratio": 0.6}
    assert cfg.data.options == {"n": 64}


def test_the_resolved_config_round_trips(recipe, tmp_path):
    cfg = load_config(recipe, ["optim.lr=2e-4"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("override, message", [
    (["optim.lr=abc"], "optim.lr='abc': expected a number"),
    (["optim.lr=-1"], "optim.lr=-1.0: expected a number > 0"),
    (["optim.lrr=1"], "optim.lrr: no such field (did you mean optim.lr?); optim fields: lr, min_lr,"),
    (["data.batch_size=12.5"], "data.batch_size=12.5: expected a whole number"),
    (["data.batch_size=true"], "data.batch_size=True: expected a whole number"),
    (["train.precision=fp8"], "train.precision='fp8': expected one of auto, fp32, bf16, fp16"),
    (["optim.schedule=step"], "optim.schedule='step': expected one of cosine, linear, constant"),
    (["optim.warmup=1.5"], "optim.warmup=1.5: expected a fraction of the steps, 0 <= warmup < 1"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9]: expected a list of 2 numbers"),
    (["train.steps=null"], "train.steps, train.epochs and train.time_budget are all unset"),
    (["train.accum_steps=3"], "data.batch_size=64 is not divisible by train.accum_steps=3"),
    (["trian.steps=3"], "unknown section 'trian'; sections: name, model, data, optim, train"),
    (["optim.lr"], "override 'optim.lr': expected section.field=value"),
    (["train.steps.x=1"], "train.steps is 10, not a mapping"),
    (["optim.lr=inf"], "optim.lr='inf': expected a finite number"),
    (["optim.lr=.inf"], "optim.lr=inf: expected a finite number"),
    (["optim.lr=nan"], "optim.lr='nan': expected a finite number"),
    (["optim.clip_grad=.nan"], "optim.clip_grad=nan: expected a finite number"),
    (["optim.betas=[0.9, .inf]"], "optim.betas=inf: expected a finite number"),
    (["train.time_budget=-.inf"], "train.time_budget=-inf: expected a finite number"),
    (["optim.weight_decay=1e999"], "optim.weight_decay='1e999': expected a finite number"),
])
def test_bad_values_name_the_field_the_value_and_what_is_allowed(recipe, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(recipe, override)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="recipe .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(bad)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**BASE, "optimizer": {}}))
    with pytest.raises(ConfigError, match=r"other.yaml: unknown section 'optimizer'"):
        load_config(other)
    with pytest.raises(ConfigError, match="other.yaml: model: expected a mapping"):
        from_dict({"train": {"steps": 1}}, origin="other.yaml")


def test_apply_overrides_leaves_the_input_alone():
    raw = {"optim": {"lr": 1.0}}
    out = apply_overrides(raw, ["optim.lr=2", "model.towers.image.model=vit_nano_patch4_32"])
    assert raw == {"optim": {"lr": 1.0}} and out["optim"]["lr"] == 2
    assert out["model"]["towers"]["image"]["model"] == "vit_nano_patch4_32"
