"""Zero-shot classification: prompt-ensemble class embeddings and accuracy against a fake text tower."""

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.eval import DEFAULT_TEMPLATES, evaluate_zeroshot, zeroshot_classifier

CLASSES = ["circle", "square", "triangle"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", lambda c: f"{c}!"]


class FakeTextTower(torch.nn.Module):
    """Maps each known prompt to a fixed embedding, recording calls and the mode it ran in."""

    def __init__(self, table: dict[str, torch.Tensor]):
        super().__init__()
        self.table = table
        self.modes: list[bool] = []

    def forward(self, prompts: list[str]) -> torch.Tensor:
        self.modes.append(self.training)
        return torch.stack([self.table[p] for p in prompts]) * torch.ones(1, requires_grad=True)


def prompt_table(seed: int = 0) -> dict[str, torch.Tensor]:
    """Each prompt's embedding: its class axis plus a template-specific offset, at varied scales."""
    g = torch.Generator().manual_seed(seed)
    table = {}
    for c, name in enumerate(CLASSES):
        prompts = ["a photo of a {}.".format(name), "a drawing of a {}.".format(name), f"{name}!"]
        for t, prompt in enumerate(prompts):
            table[prompt] = (t + 1.0) * (torch.eye(6)[c] + 0.3 * torch.randn(6, generator=g))
    return table


def test_classifier_is_the_renormalised_mean_of_normalised_prompts():
    table = prompt_table()
    tower = FakeTextTower(table)
    weights = zeroshot_classifier(tower, CLASSES, TEMPLATES)
    assert weights.shape == (3, 6)
    for c, name in enumerate(CLASSES):
        rows = [table[p] for p in (f"a photo of a {name}.", f"a drawing of a {name}.", f"{name}!")]
        mean = torch.stack([r / r.norm() for r in rows]).mean(dim=0)
        torch.testing.assert_close(weights[c], mean / mean.norm())
    assert not weights.requires_grad
    assert tower.modes == [False, False, False] and tower.training  # ran in eval mode, mode given back


def test_images_at_their_class_embedding_are_all_right():
    weights = zeroshot_classifier(FakeTextTower(prompt_table()), CLASSES, TEMPLATES)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    images = 10 * weights[labels] + 0.01 * torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    assert evaluate_zeroshot(images, labels, weights) == {"top1": 100.0, "top5": 100.0}


def test_known_mistakes_lower_top1_but_not_top5():
    weights = torch.eye(4)  # four classes, embedding c is axis c
    images = torch.eye(4)[[0, 1, 2, 3]]
    result = evaluate_zeroshot(images, [0, 1, 3, 2], weights)
    assert result == {"top1": 50.0, "top5": 100.0}
    top2 = evaluate_zeroshot(torch.tensor([[1.0, 0.5, 0.0, 0.0]]), [1], weights)
    assert top2 == {"top1": 0.0, "top5": 100.0}


def test_default_templates_fill_the_class_name():
    seen = []

    def encode(prompts):
        seen.extend(prompts)
        return torch.randn(len(prompts), 4)

    zeroshot_classifier(encode, ["dog"])
    assert seen == [t.replace("{}", "dog") for t in DEFAULT_TEMPLATES]


def test_user_errors_are_zir_errors():
    def encode(prompts):
        return torch.randn(len(prompts), 4)

    with pytest.raises(ConfigError, match="'{}'"):
        zeroshot_classifier(encode, CLASSES, ["no placeholder"])
    with pytest.raises(ConfigError, match="class_names"):
        zeroshot_classifier(encode, "circle")
    with pytest.raises(ShapeError, match="encode_text must return"):
        zeroshot_classifier(lambda p: torch.randn(4), CLASSES)
    with pytest.raises(ShapeError, match=r"must index the 3 classes, got values in \[0, 3\]"):
        evaluate_zeroshot(torch.randn(2, 4), [0, 3], torch.randn(3, 4))
    with pytest.raises(ShapeError, match="width"):
        evaluate_zeroshot(torch.randn(2, 5), [0, 1], torch.randn(3, 4))
