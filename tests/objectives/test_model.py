"""The encode-once model: plan union, forwards run once per step, teachers, param groups, build_model errors."""

import pytest
import torch

from helpers import NANO
from zir.data import Batch, MaskSpec, ViewCollate, ViewPlan
from zir.data.plan import Item
from zir.errors import ConfigError, UnknownNameError
from zir.model import ModelOutput, ZirModel, build_model
from zir.models import create_model
from zir.objectives import Forward, create_objective


def make_batch(plan: ViewPlan, b: int = 8, seed: int = 0) -> Batch:
    """A batch of random images collated for `plan`."""
    g = torch.Generator().manual_seed(seed)
    items = [Item(f"k{i}", torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8), i % 3, ["a"]) for i in range(b)]
    return ViewCollate(plan)(items)


def count_forwards(model: ZirModel) -> dict[str, int]:
    """Patch-embedding calls per tower name (every tower forward embeds patches exactly once)."""
    counts = {}
    modules = {**{n: t for n, t in model.towers.items()}, **{n: t.module for n, t in model.teachers.items()}}
    for name, tower in modules.items():
        counts[name] = 0

        def hook(*_, name=name):
            counts[name] += 1

        tower.patch_embed.register_forward_hook(hook)
    return counts


def test_mae_dino_simclr_run_each_planned_forward_once():
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {
        "mae": {"weight": 1.0}, "dino": {"weight": 1.0, "local_views": 3, "out_dim": 64}, "simclr": {"weight": 0.5}}})
    plan = model.view_plan()
    assert (plan.global_views, plan.local_views, plan.pipeline) == (2, 3, "dino")
    assert plan.masks == {"global_0": (MaskSpec("mask", 0.75, "random"),)}
    assert plan.masked_views() == ["global_0"]  # only MAE's view carries a mask
    # MAE: masked global_0; DINO: 2 globals + 3 locals (student), 2 globals (teacher); SimCLR shares DINO's globals
    assert sum(f.tower == "image" for f in model.plan_forwards) == 1 + 2 + 3
    assert sum(f.tower == "image_teacher" for f in model.plan_forwards) == 2
    assert all(len(c) == 1 for c in model.plan_calls)
    counts = count_forwards(model)
    out = model(make_batch(plan))
    assert isinstance(out, ModelOutput) and counts == {"image": 6, "image_teacher": 2}
    assert set(out.terms) == {"mae_loss", "dino_loss", "simclr_loss"}
    total = out.terms["mae_loss"] + out.terms["dino_loss"] + 0.5 * out.terms["simclr_loss"]
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-5)
    assert "dino_teacher_entropy" in out.metrics and "simclr_acc" in out.metrics
    out.loss.backward()
    assert all(p.grad is None for p in model.teachers.parameters())
    assert model.towers["image"].blocks[0].attn.qkv.weight.grad is not None


def test_dino_ibot_share_one_teacher_and_masked_forward():
    torch.manual_seed(0)
    model = build_model({"towers": {"image": {"model": "vit_nano_patch4_32", "reg_tokens": 2}}, "objectives": {
        "dino": {"local_views": 2, "out_dim": 64, "fill": "ibot"}, "ibot": {"out_dim": 64}, "koleo": {"weight": 0.1, "fill": "ibot"}}})
    assert list(model.teachers) == ["image_teacher"]
    assert model.objectives["dino"].teacher is model.objectives["ibot"].teacher
    names = [k for k, _ in model.state_dict().items() if "image_teacher" in k or "teacher.module" in k]
    assert all(k.startswith("teachers.") for k in names)  # stored once
    plan = model.view_plan()
    assert plan.masks == {f"global_{i}": (MaskSpec("mask", 0.3, "block"),) for i in range(2)}
    counts = count_forwards(model)
    out = model(make_batch(plan))
    assert counts == {"image": 2 + 2, "image_teacher": 2}  # masked-filled globals, locals; teacher globals
    out.loss.backward()
    assert model.towers["image"].mask_token.grad is not None  # the tower owns it (build_model turned it on)
    with torch.no_grad():
        for p in model.towers["image"].parameters():
            p.add_(0.5)  # the student moved away from its copy: an EMA step shows, two would show twice
    before = [p.clone() for p in model.teachers.parameters()]
    model.after_step(0, 10)  # one EMA step of the teacher both objectives read
    m = model.teachers["image_teacher"].momentum_at(0, 10)
    student = dict(model.towers["image"].named_parameters())
    for (n, t), b in zip(model.teachers["image_teacher"].module.named_parameters(), before):
        assert torch.allclose(t, m * b + (1 - m) * student[n].detach(), atol=1e-6)


def test_teacher_gets_no_grads_and_follows_ema_exactly():
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {"dino": {"local_views": 2, "out_dim": 32, "momentum": 0.9}}})
    dino = model.objectives["dino"]
    teacher = model.teachers["image_teacher"]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(p.requires_grad for p in dino.teacher_head.parameters())
    opt = torch.optim.SGD(model.param_groups(0.0), lr=0.1)
    batch = make_batch(model.view_plan())
    t_prev = {n: p.clone() for n, p in teacher.module.named_parameters()}
    h_prev = [p.clone() for p in dino.teacher_head.parameters()]
    for step in range(2):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in teacher.parameters()) and all(p.grad is None for p in dino.teacher_head.parameters())
        opt.step()
        model.after_step(step, 4)
        m = teacher.momentum_at(step, 4)
        assert m == pytest.approx(1.0 - 0.1 * (torch.cos(torch.tensor(torch.pi * step / 3)).item() + 1) / 2)
        s = dict(model.towers["image"].named_parameters())
        for n, p in teacher.module.named_parameters():
            assert torch.allclose(p, m * t_prev[n] + (1 - m) * s[n].detach(), atol=1e-6), n
        for p, hp, sp in zip(dino.teacher_head.parameters(), h_prev, dino.head.parameters()):
            assert torch.allclose(p, m * hp + (1 - m) * sp.detach(), atol=1e-6)
        t_prev = {n: p.clone() for n, p in teacher.module.named_parameters()}
        h_prev = [p.clone() for p in dino.teacher_head.parameters()]
    assert teacher.momentum_at(3, 4) == pytest.approx(1.0)


def test_param_groups_decay_and_layer_scales():
    model = build_model({"towers": NANO, "objectives": {"mae": {}, "dino": {"local_views": 0, "out_dim": 32}}})
    groups = model.param_groups(0.05, layer_decay=0.5, base_lr=1e-3)
    names = {n: g for g in groups for n in g["names"]}
    assert names["towers.image.pos_embed"]["weight_decay"] == 0.0
    assert names["towers.image.cls_token"]["weight_decay"] == 0.0
    assert names["towers.image.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert names["towers.image.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert names["objectives.mae.decoder.mask_token"]["weight_decay"] == 0.0
    assert names["objectives.dino.head.last_layer.v"]["weight_decay"] == 0.05
    # depth 2: embeddings 0, blocks 1..2, final norm 3 -> scales 0.5**3, 0.5**2, 0.5**1, 1
    assert names["towers.image.patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.125)
    assert names["towers.image.blocks.1.mlp.fc1.weight"]["lr"] == pytest.approx(0.5e-3)
    assert names["objectives.mae.decoder.pred.weight"]["lr_scale"] == 1.0
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in params} == trainable  # every trainable parameter once, no teacher


def test_build_model_and_create_objective_errors():
    with pytest.raises(UnknownNameError, match="objective 'bogus'"):
        build_model({"towers": NANO, "objectives": {"bogus": {}}})
    with pytest.raises(ConfigError, match="unknown setting 'temprature'"):
        build_model({"towers": NANO, "objectives": {"simclr": {"temprature": 0.1}}})
    with pytest.raises(ConfigError, match="missing field 'model'"):
        build_model({"towers": {"image": {}}, "objectives": {"mae": {}}})
    with pytest.raises(ConfigError, match="model.objectives"):
        build_model({"towers": NANO, "objectives": {}})
    with pytest.raises(ConfigError, match="tower 'text'"):
        create_objective("mae", {"image": create_model("vit_nano_patch4_32", num_classes=0)}, tower="text")
    with pytest.raises(ConfigError, match="mae and ibot both name mask .mask. on view global_0 .*own mask_name"):
        build_model({"towers": NANO, "objectives": {"mae": {}, "ibot": {"out_dim": 32}}}).view_plan()
    with pytest.raises(ConfigError, match="view 'glob_1'"):
        build_model({"towers": NANO, "objectives": {"simclr": {"views": ["global_0", "glob_1"]}}})
    with pytest.raises(ConfigError, match="not in the model"):
        build_model({"towers": NANO, "objectives": {"koleo": {"fill": "ibot"}}})


def test_two_instances_of_one_family_by_type():
    model = build_model({"towers": NANO, "objectives": {
        "simclr": {}, "simclr_local": {"type": "simclr", "views": ["global_0", "local_0"]}}})
    plan = model.view_plan()
    assert plan.local_views == 1
    counts = count_forwards(model)
    out = model(make_batch(plan))
    assert counts == {"image": 3} and set(out.terms) == {"simclr_loss", "simclr_local_loss"}
    assert Forward("image", "global_0") in model.encode(make_batch(plan))


def test_stacked_views_give_the_features_of_separate_forwards():
    torch.manual_seed(0)
    spec = {"towers": NANO, "objectives": {"dino": {"local_views": 3, "out_dim": 32}, "mae": {}, "simclr": {}}}
    model = build_model({**spec, "stack_views": True})
    # one tower call per group of same-size views: masked global_0 | globals | locals, and the teacher's globals
    assert sorted(len(c) for c in model.plan_calls) == [1, 2, 2, 3]
    batch = make_batch(model.view_plan())
    counts = count_forwards(model)
    model(batch)
    assert counts == {"image": 3, "image_teacher": 1}
    cache = model.encode(batch)
    tower = model.towers["image"]
    for f, feats in cache.items():
        t = model.tower_for(f.tower)
        keep = batch.keep(f.view) if f.masked else None
        ref = t.forward_tokens(batch.views[f.view.name], keep)
        assert feats.shape == ref.shape and torch.allclose(feats, ref, atol=1e-5), f
    assert tower is model.tower_for("image")


def test_a_convolutional_tower_takes_images_smaller_than_its_output_stride():
    # MobileViT v2 gives one token per 32 px but takes any side; the clip recipe's 16 px images must plan
    model = build_model({"towers": {"image": {"model": "mobilevitv2_050", "img_size": 16},
                                    "text": {"model": "text_nano", "vocab_size": 64}}, "objectives": {"clip": {}}})
    plan = model.view_plan()
    assert (plan.size, plan.patch_size) == (16, 16)
