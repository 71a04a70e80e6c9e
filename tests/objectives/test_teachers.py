"""Teachers owned by the model: objectives declare a `TeacherSpec`, `ZirModel` builds one `EMATeacher` per name,
moves it once per step, and the state dict and the numbers are those of the code before the change."""

import importlib.util

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from helpers import FIXTURES, NANO
from zir.errors import ConfigError
from zir.model import ZirModel, build_model
from zir.models import create_model
from zir.nn.ema import ema_update_
from zir.objectives import DINO, Forward, Loss, Objective, TeacherSpec, create_objective
from zir.train.ema import WeightEMA

_spec = importlib.util.spec_from_file_location("make_teacher_state", FIXTURES / "make_teacher_state.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


def nano() -> dict[str, nn.Module]:
    return {"image": create_model("vit_nano_patch4_32", num_classes=0, mask_token=True)}


def test_objectives_declare_their_teacher_and_the_model_builds_one_per_name():
    for name, momentum in (("dino", 0.996), ("ibot", 0.996), ("masked_dino", 0.99)):
        obj = create_objective(name, nano())
        assert obj.teacher_specs() == {"image_teacher": TeacherSpec("image", momentum, 1.0)}
        assert obj._teachers == {}  # declared, not built: no copy of the tower until someone needs it
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {
        "dino": {"local_views": 2, "out_dim": 32, "fill": "ibot"}, "ibot": {"out_dim": 32}, "mae": {}}})
    assert list(model.teachers) == ["image_teacher"] and model.teacher_specs == {"image_teacher": TeacherSpec("image")}
    assert model.objectives["dino"].teacher is model.objectives["ibot"].teacher is model.teachers["image_teacher"]
    assert model.teachers["image_teacher"].module is not model.towers["image"]


def test_the_model_moves_each_teacher_once_per_step_and_the_objectives_only_their_heads():
    torch.manual_seed(0)
    model = build_model({"towers": NANO, "objectives": {
        "dino": {"local_views": 2, "out_dim": 32, "fill": "ibot", "momentum": 0.9}, "ibot": {"out_dim": 32, "momentum": 0.9}}})
    teacher = model.teachers["image_teacher"]
    with torch.no_grad():
        for p in model.towers["image"].parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    for obj in model.objectives.values():
        obj.after_step(0, 10)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), before))  # not the objectives' job
    model.after_step(0, 10)
    m = teacher.momentum_at(0, 10)
    student = dict(model.towers["image"].named_parameters())
    for (n, p), b in zip(teacher.module.named_parameters(), before):
        assert torch.allclose(p, m * b + (1 - m) * student[n], atol=1e-6), n  # once: twice would give m^2


def test_a_standalone_objective_builds_its_teacher_on_first_use_and_moves_it_itself():
    towers = nano()
    dino = DINO(towers, out_dim=16, momentum=0.5)
    with torch.no_grad():
        for p in towers["image"].parameters():
            p.mul_(2.0)  # after construction: the teacher copies the tower as it is when first used
    teacher = dino.teacher
    assert dino.teacher is teacher and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(t, s) for t, s in zip(teacher.module.parameters(), towers["image"].parameters()))
    before = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in towers["image"].parameters():
            p.add_(1.0)
    dino.after_step(0, 3)  # momentum 0.5 at the first step
    for t, b in zip(teacher.module.parameters(), before):
        assert torch.allclose(t, b + 0.5, atol=1e-6)


class Follower(Objective):
    """A test objective that declares one teacher of `follows` and reads nothing else."""

    name = "follower"

    def __init__(self, towers, follows: str = "image", momentum: float = 0.996) -> None:
        super().__init__(towers, "image")
        self.spec = TeacherSpec(follows, momentum)

    def teacher_specs(self):
        return {"image_teacher": self.spec}

    def view_plan(self):
        return {"image": 1}

    def forwards(self):
        return [Forward("image_teacher", "image")]

    def forward(self, batch, features):
        return Loss(features[self.forwards()[0]].sum())


def test_conflicting_or_impossible_teachers_are_one_line_errors():
    towers = {**nano(), "text": create_model("text_nano")}
    with pytest.raises(ConfigError, match=r"^model.objectives: dino and follower share the teacher image_teacher but follow "
                                          r"towers image and text$"):
        ZirModel(towers, {"dino": (DINO(towers, out_dim=16), 1.0), "follower": (Follower(towers, "text"), 1.0)})
    with pytest.raises(ConfigError, match=r"^model.objectives: dino and follower share the teacher image_teacher but ask for "
                                          r"momentum \(0.996, 1.0\) and \(0.9, 1.0\)"):
        ZirModel(towers, {"dino": (DINO(towers, out_dim=16), 1.0), "follower": (Follower(towers, momentum=0.9), 1.0)})
    with pytest.raises(ConfigError, match=r"^model.objectives.follower: teacher image_teacher follows tower 'audio'"):
        ZirModel(towers, {"follower": (Follower(towers, "audio"), 1.0)})
    with pytest.raises(ConfigError, match=r"^teacher momentum 0.9 -> 0.5: expected 0 <= momentum <= final_momentum <= 1$"):
        TeacherSpec("image", 0.9, 0.5)
    with pytest.raises(ConfigError, match="declares no teacher 'text_teacher'"):
        DINO(towers, out_dim=16).use_teacher("text_teacher", None)


def test_a_state_dict_saved_before_teachers_were_declared_loads_and_is_reproduced():
    saved = load_file(str(fixture.FIXTURE))  # written by the code in which each objective built its EMATeacher
    assert "teachers.image_teacher.module.cls_token" in saved and not any(".teacher." in k for k in saved)
    torch.manual_seed(1)
    build_model(fixture.TINY).load_state_dict(saved, strict=True)
    model, losses = fixture.trained(fixture.TINY)
    state = model.state_dict()
    assert sorted(state) == sorted(saved)  # the same keys (safetensors stores them sorted)
    assert list(dict.fromkeys(k.split(".")[0] for k in state)) == ["towers", "objectives", "teachers"]
    # Adam turns last-bit differences of near-zero gradients (one processor's kernels against another's) into
    # steps of up to ~4e-5 after three updates (Intel Xeon with AMX against the AMD EPYC that wrote the
    # fixture); a misloaded or misnamed tensor differs by the size of the weights (~2e-2)
    for k, v in state.items():
        assert torch.allclose(v, saved[k], rtol=1e-4, atol=2e-4), k
    assert losses == pytest.approx([8.070569038391113, 6.218286037445068, 4.600628852844238], rel=1e-6)


def test_dino_ibot_losses_are_those_of_the_objectives_that_built_their_own_teacher():
    _, losses = fixture.trained(fixture.NANO)  # vit_nano_patch4_32, seed 0, three AdamW steps on one batch
    assert losses == pytest.approx([7.834784984588623, 4.606170177459717, 4.340897560119629], rel=1e-6)


def test_one_ema_step_serves_teachers_heads_and_the_weight_ema():
    avg, val = [torch.ones(3), torch.zeros(2)], [torch.full((3,), 3.0, dtype=torch.bfloat16), torch.full((2,), 4.0)]
    ema_update_(avg, val, 0.75)
    assert avg[0].tolist() == [1.5] * 3 and avg[1].tolist() == [1.0] * 2 and avg[0].dtype == torch.float32
    with pytest.raises(ValueError):
        ema_update_(avg, val[:1], 0.75)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-1.0)
    ema = WeightEMA(model, 0.75)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(3.0)
    ema.update(model)
    assert ema.state_dict()["weight"].tolist() == [[1.5, 1.5]] * 2 and ema.state_dict()["bias"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", ["dino", "ibot", "masked_dino"])
def test_the_distillation_objectives_check_their_temperatures_alike(name):
    with pytest.raises(ConfigError, match=rf"^{name} student_temp=0: expected > 0$"):
        create_objective(name, nano(), student_temp=0)
    with pytest.raises(ConfigError, match=rf"^{name} center_momentum=1: expected 0 <= m < 1$"):
        create_objective(name, nano(), center_momentum=1)
