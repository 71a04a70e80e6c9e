"""Fine-tuning: the supervised objective, `model.init` from a pretrained run, and a tiny end-to-end fine-tune."""

from __future__ import annotations

import pytest
import torch

from helpers import metrics_rows
from zir.config import from_dict
from zir.data.plan import Batch
from zir.errors import ConfigError
from zir.model import build_model
from zir.objectives import Forward
from zir.train import save_checkpoint, train
from zir.train.init_weights import init_from

TOWER = {"model": "vit_nano_patch4_32", "img_size": 16}


def finetune_model(classes: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_model({"towers": {"image": dict(TOWER)}, "objectives": {"supervised": {"num_classes": classes}}})


def pretrained_run(root, objectives: dict, seed: int = 1):
    """A run folder holding one checkpoint of a model with `objectives` (weights seeded differently)."""
    torch.manual_seed(seed)
    model = build_model({"towers": {"image": dict(TOWER)}, "objectives": objectives})
    run = root / "pre"
    save_checkpoint(run / "checkpoints", 3, model.state_dict(), {"step": 3})
    return run, model


def batch_of(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return Batch({"global_0": x}, {}, {}, {}, y, [str(i) for i in range(len(y))])


def test_supervised_reaches_full_train_accuracy_on_a_separable_batch():
    model = finetune_model(classes=3)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(12) % 3
    # each class a different constant colour plus noise: linearly separable in the pooled features
    x = torch.randn(12, 3, 16, 16, generator=g) * 0.1 + torch.eye(3)[y][:, :, None, None] * 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model(batch_of(x, y))
    for _ in range(15):
        out = model(batch_of(x, y))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    out = model(batch_of(x, y))
    assert first.metrics["supervised_top1"] < 100.0
    assert out.metrics["supervised_top1"] == 100.0
    assert out.metrics["supervised_loss"] < 0.1 < first.metrics["supervised_loss"]


def test_classify_pooled_features_gives_the_logits_of_the_tokens():
    """Evaluation classifies pooled features extracted once; they must give the training path's logits."""
    model = finetune_model(classes=3).eval()
    obj = model.objectives["supervised"]
    with torch.no_grad():
        obj.head.fc.weight.normal_()
        tokens = obj.tower.forward_tokens(torch.randn(5, 3, 16, 16))
        logits = obj.classify(obj.tower.pool(tokens).double())  # cast to the head's dtype
        expected = obj.logits(tokens)
    assert logits.shape == (5, 3) and logits.dtype == torch.float32
    assert torch.allclose(logits, expected, atol=1e-6) and expected.std() > 0.1


def test_supervised_loss_is_cross_entropy_with_label_smoothing():
    torch.manual_seed(0)
    model = build_model({"towers": {"image": dict(TOWER)},
                         "objectives": {"supervised": {"num_classes": 4, "label_smoothing": 0.2, "head_init_std": 1.0}}})
    obj = model.objectives["supervised"]
    x, y = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 3, 1])
    out = model(batch_of(x, y))
    logits = obj.logits(model.towers["image"].forward_tokens(x))
    smoothed = torch.full((5, 4), 0.2 / 4).scatter_(1, y[:, None], 0.8 + 0.2 / 4)
    expected = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.metrics["supervised_top1"] == pytest.approx(100.0 * float((logits.argmax(-1) == y).float().mean()))


@pytest.mark.parametrize("bad, field", [({"num_classes": 1}, "num_classes"), ({}, "num_classes"),
                                        ({"num_classes": 3, "label_smoothing": 1.0}, "label_smoothing"),
                                        ({"num_classes": 3, "head_norm": "group"}, "head_norm")])
def test_supervised_settings_are_checked(bad, field):
    with pytest.raises(ConfigError, match=field):
        build_model({"towers": {"image": dict(TOWER)}, "objectives": {"supervised": bad}})


def test_labels_outside_the_head_are_a_clear_error():
    model = finetune_model(classes=2)
    with pytest.raises(ConfigError, match="num_classes=2"):
        model(batch_of(torch.randn(2, 3, 16, 16), torch.tensor([0, 5])))


def test_init_copies_the_pretrained_tower_exactly_and_leaves_the_head_fresh(tmp_path):
    run, pre = pretrained_run(tmp_path, {"mae": {}})
    model = finetune_model(seed=0)
    fresh = finetune_model(seed=0)
    assert init_from(model, str(run)) == {"image": "image"}
    for k, v in pre.towers["image"].state_dict().items():
        assert torch.equal(model.towers["image"].state_dict()[k], v), k
    assert not torch.equal(fresh.towers["image"].pos_embed, pre.towers["image"].pos_embed)
    for k, v in fresh.objectives.state_dict().items():  # the head is what the seed made, untouched
        assert torch.equal(model.objectives.state_dict()[k], v), k


def test_init_can_take_the_dino_teacher_and_a_checkpoint_folder(tmp_path):
    run, pre = pretrained_run(tmp_path, {"dino": {"out_dim": 64, "local_views": 0}})
    with torch.no_grad():  # a teacher that differs from its student, as after EMA training
        for p in pre.teachers["image_teacher"].module.parameters():
            p.add_(1.0)
    save_checkpoint(run / "checkpoints", 4, pre.state_dict(), {"step": 4})
    model = finetune_model()
    init_from(model, {"path": str(run / "checkpoints" / "step_00000004"), "towers": {"image": "image_teacher"}})
    teacher = pre.teachers["image_teacher"].module.state_dict()
    for k, v in model.towers["image"].state_dict().items():
        assert torch.equal(v, teacher[k]), k
    assert not torch.equal(model.towers["image"].pos_embed, pre.towers["image"].pos_embed)


def test_an_initialised_tower_gives_its_ema_teacher_the_same_start(tmp_path):
    run, pre = pretrained_run(tmp_path, {"mae": {}})
    torch.manual_seed(0)
    model = build_model({"towers": {"image": dict(TOWER)}, "objectives": {"dino": {"out_dim": 64, "local_views": 0}}})
    init_from(model, {"path": str(run), "towers": ["image"]})
    teacher = model.teachers["image_teacher"].module.state_dict()
    for k, v in pre.towers["image"].state_dict().items():
        assert torch.equal(teacher[k], v), k


@pytest.mark.parametrize("value, message", [
    ("{tmp}/missing", "model.init={tmp}/missing: does not exist"),
    ("{tmp}/empty", "model.init={tmp}/empty: holds no checkpoint"),
    ("{tmp}/broken.safetensors", "model.init={tmp}/broken.safetensors: {tmp}/broken.safetensors is not a readable"),
    ({"path": "{tmp}/pre", "towers": ["text"]}, "model.init.towers: 'text' is not a tower of this model"),
    ({"path": "{tmp}/pre", "towers": {"image": "audio"}}, "model.init.towers: 'audio' is not in"),
    ({"path": "{tmp}/pre", "from": 1}, "model.init.from: no such field"),
    (3, "model.init=3: expected a run folder"),
])
def test_a_bad_init_is_a_one_line_config_error(tmp_path, value, message):
    pretrained_run(tmp_path, {"mae": {}})
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors at all")

    def fill(v):
        return {k: fill(x) for k, x in v.items()} if isinstance(v, dict) else v.format(tmp=tmp_path) if isinstance(v, str) else v

    with pytest.raises(ConfigError) as err:
        init_from(finetune_model(), fill(value))
    assert str(err.value).startswith(message.format(tmp=tmp_path)) and "\n" not in str(err.value)


def test_a_tower_of_another_shape_is_named_in_the_error(tmp_path):
    torch.manual_seed(0)
    other = build_model({"towers": {"image": {**TOWER, "embed_dim": 32}}, "objectives": {"mae": {}}})
    save_checkpoint(tmp_path / "pre" / "checkpoints", 1, other.state_dict(), {"step": 1})
    with pytest.raises(ConfigError, match=r"model.init: tower 'image' does not fit 'image' of .*size mismatch"):
        init_from(finetune_model(), str(tmp_path / "pre"))


def recipe(objectives: dict, steps: int, lr: float = 1e-3, init=None) -> dict:
    model = {"towers": {"image": dict(TOWER)}, "objectives": objectives}
    if init is not None:
        model["init"] = str(init)
    return {"name": "tiny", "model": model, "optim": {"lr": lr, "layer_decay": 0.75, "weight_decay": 0.0},
            "data": {"source": "shapes", "batch_size": 8, "options": {"n": 32, "size": 16, "objects": [1, 1], "label": "shape"}},
            "train": {"steps": steps, "ckpt_every": 0, "threads": 1}}


def test_a_tiny_finetune_run_starts_from_a_tiny_pretrained_run(tmp_path):
    from zir.train import latest_checkpoint

    train(from_dict(recipe({"mae": {}}, steps=2)), tmp_path / "mae", progress=False)
    _, (pre, _, _) = latest_checkpoint(tmp_path / "mae" / "checkpoints")
    # a learning rate too small to move the weights: after training the tower must still be the pretrained one
    ft = recipe({"supervised": {"num_classes": 5}}, steps=2, lr=1e-9, init=tmp_path / "mae")
    summary = train(from_dict(ft), tmp_path / "ft", progress=False)
    assert summary["steps"] == 2
    _, (state, _, _) = latest_checkpoint(tmp_path / "ft" / "checkpoints")
    tower = {k: v for k, v in state.items() if k.startswith("towers.image.")}
    assert tower and all(torch.allclose(v, pre[k], atol=1e-6) for k, v in tower.items())
    assert "objectives.supervised.head.fc.weight" in state and not any(k.startswith("objectives.mae") for k in state)
    rows = metrics_rows(tmp_path / "ft")
    assert len(rows) == 2 and all(0.0 <= float(r["supervised_top1"]) <= 100.0 for r in rows)
    assert "model.init: towers image <- image" in (tmp_path / "ft" / "train.log").read_text()


def test_a_bad_init_path_fails_before_a_run_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match="model.init=.*missing: does not exist"):
        train(from_dict(recipe({"supervised": {"num_classes": 5}}, 1, init=tmp_path / "missing")), tmp_path / "ft",
              progress=False)
    assert not (tmp_path / "ft").exists()


def test_supervised_reads_one_lightly_augmented_view():
    model = finetune_model()
    assert model.objectives["supervised"].forwards() == [Forward("image", "global_0")]
    assert model.view_plan().pipeline == "light"
