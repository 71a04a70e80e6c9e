"""The unified recipe encodes each (tower, view, mask) once: MAE and masked self-distillation share one masked
encoding of the view CLIP and CoCa read whole (with FLIP's `keep`, all four share the masked one).

Also the parts that make this possible: `masked_dino` (student on the masked view, EMA teacher on the whole
view), objectives that start late or ramp in (`start`/`ramp`), CoCa without its own contrastive term.
"""

from __future__ import annotations

import copy

import pytest
import torch

from zir.config import load_config
from zir.data import load_tokenizer, open_source
from zir.data.loader import Loader
from zir.data.tokenizer import text_context
from zir.errors import ConfigError
from zir.model import ZirModel, build_model
from zir.objectives import Forward
from zir.objectives.phase import Phase
from zir.recipes import TOKENIZERS_DIR

TOKENIZER = TOKENIZERS_DIR / "shapes.json"


def unified(**objective_overrides) -> tuple[dict, object]:
    """The shipped unified model section (objectives changed as given) and one real batch of 16 for it."""
    cfg = load_config("unified", ["data.options.n=64"])
    spec = copy.deepcopy(cfg.model)
    for name, settings in objective_overrides.items():
        if settings is None:
            spec["objectives"].pop(name)
        else:
            spec["objectives"][name] = {**spec["objectives"].get(name, {}), **settings}
    torch.manual_seed(0)
    model = build_model(spec)
    plan = model.view_plan()
    plan.image_pipeline = cfg.data.plan["image_pipeline"]
    loader = Loader(open_source("shapes", split="train", **cfg.data.options), plan, 16,
                    tokenizer=load_tokenizer(TOKENIZER, context_length=text_context(model)), shuffle=False)
    return model, next(iter(loader))


def tower_calls(model) -> dict[str, int]:
    """Count forward_tokens calls per tower (students and teachers) during the next model(batch)."""
    counts: dict[str, int] = {}
    modules = {**dict(model.towers.items()), **{n: t.module for n, t in model.teachers.items()}}
    for name, tower in modules.items():
        original = tower.forward_tokens

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        tower.forward_tokens = counted
    return counts


FROM_THE_START = {"mae": {"start": 0.0}, "masked_dino": {"start": 0.0}}  # the recipe starts both halfway


def test_each_distinct_tower_view_mask_triple_runs_once_and_mae_and_distillation_share_the_masked_one():
    model, batch = unified(**FROM_THE_START)
    masked, whole = Forward("image", "image", "mask"), Forward("image", "image")
    for name in ("mae", "masked_dino"):
        assert masked in model.objectives[name].forwards(), name
    for name in ("clip", "coca"):
        assert whole in model.objectives[name].forwards(), name
    triples = {(f.tower, f.view.name, f.mask) for o in model.objectives.values() for f in o.forwards()}
    assert triples == {("image", "image", "mask"), ("image", "image", ""), ("text", "text_0", ""),
                       ("image_teacher", "image", "")}
    assert len(model.plan_forwards) == len(triples)
    calls = tower_calls(model)
    out = model(batch)
    per_tower = {t: sum(1 for tower, _, _ in triples if tower == t) for t in ("image", "text", "image_teacher")}
    assert calls == per_tower == {"image": 2, "text": 1, "image_teacher": 1}
    assert torch.isfinite(out.loss)
    keep = batch.mask("image").keep
    assert keep.shape[1] == batch.mask("image").mask.shape[1] // 2  # half of the patches encoded


def test_flip_masking_shares_the_masked_forward_too():
    model, batch = unified(clip={"keep": 0.5}, coca={"keep": 0.5}, **FROM_THE_START)
    calls = tower_calls(model)
    model(batch)
    assert calls == {"image": 1, "text": 1, "image_teacher": 1}  # CLIP, CoCa, MAE, distillation: one encoding


def test_one_mask_name_with_two_settings_is_refused_in_one_line_naming_both_objectives():
    with pytest.raises(ConfigError, match=r"mae and masked_dino both name mask 'mask' on view image but ask for "
                                          r"mask \(random, 0.75\) and mask \(random, 0.5\); give one of them its own mask_name"):
        unified(mae={"mask_ratio": 0.75})


def test_two_named_masks_on_one_view_cost_two_masked_forwards_and_one_name_costs_one():
    # MAE at 0.75 and FLIP-style CLIP at keep 0.5 on the same view: their own masks, two masked encodings
    model, batch = unified(mae={"mask_ratio": 0.75, "mask_name": "mae", "start": 0.0}, clip={"keep": 0.5},
                           coca={"keep": 0.5}, masked_dino={"start": 0.0})
    assert sorted(batch.masks) == [("image", "mae"), ("image", "mask")]
    assert batch.mask("image", "mae").keep.shape[1] == 4 and batch.mask("image", "mask").keep.shape[1] == 8  # of 16
    assert not torch.equal(batch.mask("image", "mae").mask[:, :4], batch.mask("image", "mask").mask[:, :4])
    triples = {(f.tower, f.view.name, f.mask) for o in model.objectives.values() for f in o.forwards()}
    assert triples == {("image", "image", "mae"), ("image", "image", "mask"), ("text", "text_0", ""),
                       ("image_teacher", "image", "")}
    calls = tower_calls(model)
    model(batch)
    assert calls == {"image": 2, "text": 1, "image_teacher": 1} and len(model.plan_forwards) == len(triples)
    # the same ratio under one name: CLIP, CoCa, MAE and the distillation read one masked encoding
    model, batch = unified(mae={"mask_name": "shared", "start": 0.0}, masked_dino={"mask_name": "shared", "start": 0.0},
                           clip={"keep": 0.5, "mask_name": "shared"}, coca={"keep": 0.5, "mask_name": "shared"})
    assert list(batch.masks) == [("image", "shared")]
    calls = tower_calls(model)
    model(batch)
    assert calls == {"image": 1, "text": 1, "image_teacher": 1}


def test_masked_distillation_trains_the_student_and_follows_it_with_the_teacher():
    model, batch = unified(clip=None, coca=None, mae=None, masked_dino={"start": 0.0})
    obj = model.objectives["masked_dino"]
    teacher_before = [p.clone() for p in obj.teacher.module.parameters()]
    out = model(batch)
    out.loss.backward()
    assert all(p.grad is None for p in obj.teacher.module.parameters())
    assert all(p.grad is None for p in obj.teacher_head.parameters())
    assert obj.head.mlp[0].weight.grad.abs().sum() > 0
    assert model.towers["image"].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert obj.center.abs().sum() > 0  # the running centre moved
    with torch.no_grad():
        for p in model.towers["image"].parameters():
            p.add_(1.0)
    model.after_step(0, 10)
    moved = [(a - b).abs().max() for a, b in zip(obj.teacher.module.parameters(), teacher_before)]
    assert all(abs(float(m) - (1 - obj.teacher.momentum_at(0, 10))) < 1e-5 for m in moved)
    assert set(out.metrics) >= {"masked_dino_teacher_entropy", "masked_dino_kl", "masked_dino_emb_std"}


@pytest.mark.parametrize("keep", [0.0, 1.0, 1.5])
def test_masked_distillation_needs_a_mask(keep):
    with pytest.raises(ConfigError, match="masked_dino keep"):
        unified(clip=None, coca=None, mae=None, masked_dino={"keep": keep})


def test_a_phase_is_zero_before_start_and_ramps_to_one():
    phase = Phase(start=0.5, ramp=0.25)
    assert [phase.factor(s, 100) for s in (0, 49, 50, 62, 75, 99)] == [0.0, 0.0, 0.0, 0.48, 1.0, 1.0]
    assert Phase().factor(0, 10) == 1.0 and Phase(ramp=0.5).factor(0, 10) == 0.0
    with pytest.raises(ConfigError, match="start"):
        Phase(start=1.0)


def test_an_objective_that_starts_late_is_not_computed_nor_its_forwards_run():
    model, batch = unified(masked_dino={"start": 0.5})
    calls = tower_calls(model)
    out = model(batch)
    assert "image_teacher" not in calls and "masked_dino_loss" not in out.metrics
    assert model.active_weights()["masked_dino"] == 0.0
    model.after_step(49, 100)  # the next step is 50 of 100: started
    out = model(batch)
    assert calls["image_teacher"] == 1 and out.metrics["masked_dino_weight"] == 1.0
    state = model.state_dict()
    assert state["phase_factors"].tolist() == [1.0, 1.0, 1.0, 1.0]  # saved, so a resume continues exactly


def test_bad_phases_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"model.objectives.mae.start=2"):
        unified(mae={"start": 2})
    with pytest.raises(ConfigError, match="at least one"):
        unified(clip={"ramp": 0.1}, coca=None, mae=None, masked_dino=None)


def test_coca_without_its_contrastive_weight_does_not_compute_that_term():
    model, batch = unified(clip=None, mae=None, masked_dino=None)
    coca = model.objectives["coca"]
    out = model(batch)
    out.loss.backward()
    assert "coca_caption_loss" in out.metrics and "coca_contrastive_loss" not in out.metrics
    assert coca.loss.logit_scale.grad is None


def test_objectives_sharing_a_teacher_must_agree_on_its_momentum():
    with pytest.raises(ConfigError, match=r"masked_dino and dino share the teacher image_teacher but ask for momentum "
                                          r"\(0\.99, 1\.0\) and \(0\.996, 1\.0\)"):
        unified(dino={"momentum": 0.996, "global_views": 2, "local_views": 0, "out_dim": 64})
    model, _ = unified(dino={"momentum": 0.99, "global_views": 2, "local_views": 0, "out_dim": 64})
    assert model.objectives["dino"].teacher is model.objectives["masked_dino"].teacher  # one EMA, updated once


def test_an_objective_on_the_image_view_alone_makes_no_global_crops():
    # the plan's default is two global crops; nobody reads them here, so the loader must not augment them
    model, batch = unified(**FROM_THE_START)
    assert model.view_plan().global_views == 0 and not any(v.startswith("global") for v in batch.views)
    with pytest.raises(ConfigError, match="view 'left_0'"):
        unified(clip=None, coca=None, mae=None, masked_dino={"view": "left_0", "start": 0.0})


def test_keep_from_reads_the_view_whole_then_through_the_shared_mask():
    model, batch = unified(clip={"keep": 0.5, "keep_from": 0.5}, **FROM_THE_START)
    clip = model.objectives["clip"]
    assert Forward("image", "image") in clip.forwards()
    assert {Forward("image", "image"), Forward("image", "image", "mask")} <= set(model.plan_forwards)
    model.after_step(3, 10)  # step 4 of 10: still whole
    assert Forward("image", "image") in clip.forwards()
    model.after_step(4, 10)  # from half of training on: the masked encoding MAE and the distillation read
    assert Forward("image", "image", "mask") in clip.forwards()
    assert "objectives.clip.masking" in model.state_dict() and bool(model.state_dict()["objectives.clip.masking"])
    with pytest.raises(ConfigError, match="keep_from=0.5 needs keep < 1"):
        unified(clip={"keep_from": 0.5})


def rows_per_call(model) -> dict[str, list[int]]:
    """The batch rows of each tower's forward_tokens calls during the next model(batch)."""
    rows: dict[str, list[int]] = {}
    modules = {**dict(model.towers.items()), **{n: t.module for n, t in model.teachers.items()}}
    for name, tower in modules.items():
        original = tower.forward_tokens

        def counted(x, *args, _name=name, _original=original, **kwargs):
            rows.setdefault(_name, []).append(x.shape[0])
            return _original(x, *args, **kwargs)

        tower.forward_tokens = counted
    return rows


def test_distill_fraction_runs_the_teacher_on_a_quarter_and_its_loss_is_the_full_loss_on_those_rows():
    model, batch = unified(mae={"start": 0.0}, masked_dino={"start": 0.0, "distill_fraction": 0.25})  # 16 rows
    model.eval()  # the teacher's centre stays put, so both losses below see the same one
    obj = model.objectives["masked_dino"]
    assert Forward("image_teacher", "image", rows=0.25) in obj.forwards()
    rows = rows_per_call(model)
    out = model(batch)
    # the teacher encodes 4 rows; the student's masked encoding (MAE reads it too) and the whole view all 16
    assert rows == {"image": [16, 16], "text": [16], "image_teacher": [4]}
    whole, _ = unified(mae={"start": 0.0}, masked_dino={"start": 0.0, "distill_fraction": 1.0})  # same weights, every row
    whole.eval()
    features = whole.encode(batch)
    first_four = {f: v[:4] for f, v in features.items()}
    full = whole.objectives["masked_dino"]
    assert out.metrics["masked_dino_loss"] == pytest.approx(full(batch, first_four).value.item(), rel=1e-5)
    # the rows after the first four do not count: change their images and the term stays the same
    batch.views["image"][4:] = batch.views["image"][4:].flip(-1)
    assert obj(batch, model.encode(batch)).value.item() == pytest.approx(out.metrics["masked_dino_loss"], rel=1e-6)
    assert full(batch, whole.encode(batch)).value.item() != pytest.approx(full(batch, features).value.item(), rel=1e-6)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="distill_fraction"):
            unified(masked_dino={"distill_fraction": bad})


def test_forwards_on_part_of_the_batch_are_their_own_tower_calls():
    assert Forward("image", "image", rows=0.5) != Forward("image", "image")
    assert ZirModel._plan_calls([Forward("image", "global_0"), Forward("image", "global_1", rows=0.5),
                                 Forward("image", "global_2")]) == [
        (Forward("image", "global_0"), Forward("image", "global_2")), (Forward("image", "global_1", rows=0.5),)]
    with pytest.raises(ConfigError, match="rows=0"):
        Forward("image", "image", rows=0)
