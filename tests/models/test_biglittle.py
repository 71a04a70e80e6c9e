"""big.LITTLE ViT: keep 1.0 equals its big ViT while the little path is zero, fewer big tokens at lower keep,
the score learns, it trains under zir's objectives, and a bad keep ratio is a one-line error."""

from __future__ import annotations

import pytest
import torch

from helpers import TEXT_NANO, first_batch, one_line_error
from zir.cli import main
from zir.data import load_tokenizer, open_source
from zir.errors import ConfigError
from zir.model import build_model
from zir.models.biglittle import BigLittleViT
from zir.models.tower import check_tower
from zir.models.zoo import create_model, list_models
from zir.recipes import TOKENIZERS_DIR

NAME = "vit_nano_biglittle_patch4_32"


def big_vit_of(model: BigLittleViT):
    """A plain ViT with the big.LITTLE tower's big weights (every parameter name a ViT has)."""
    vit = create_model("vit_nano_patch4_32").eval()
    missing, unexpected = vit.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith(("little.", "score")) for k in unexpected)
    return vit


def test_zoo_has_biglittle_towers_that_are_towers():
    assert {"vit_micro_biglittle_patch4_32", NAME} <= set(list_models("*biglittle*"))
    model = create_model(NAME)
    check_tower(model, NAME)
    assert not model.can_return_attention and model.keep_ratio == 0.5


def test_keep_one_equals_the_big_vit_while_the_little_path_is_zero():
    torch.manual_seed(0)
    model = create_model(NAME, keep_ratio=1.0).eval()
    vit = big_vit_of(model)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_tokens(x), vit.forward_tokens(x), atol=1e-5)
        for little in model.little:  # a trained little path: keep 1.0 is no longer the big ViT alone
            torch.nn.init.normal_(little.up.weight, std=0.05)
        assert (model.forward_tokens(x) - vit.forward_tokens(x)).abs().max() > 1e-3


def test_lower_keep_changes_only_what_the_big_blocks_see():
    torch.manual_seed(0)
    model = create_model(NAME, keep_ratio=0.25).eval()
    assert [model.big_tokens(n) for n in (64, 16, 1)] == [16, 4, 1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_tokens(x)
        assert out.shape == (2, 65, 64)  # every token comes out: unselected ones carry the little update
        assert not torch.allclose(out, big_vit_of(model).forward_tokens(x), atol=1e-3)
        keep = torch.arange(0, 64, 4).expand(2, 16)  # MAE/FLIP patch dropping still works
        assert model.forward_tokens(x, keep).shape == (2, 17, 64)


def test_the_importance_score_gets_gradient():
    torch.manual_seed(0)
    model = create_model(NAME, keep_ratio=0.5)
    model.forward_tokens(torch.randn(2, 3, 32, 32)).pow(2).sum().backward()
    assert all(score.weight.grad.abs().sum() > 0 for score in model.score)


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, "half", True])
def test_a_bad_keep_ratio_is_one_config_error(bad):
    with pytest.raises(ConfigError, match=r"keep_ratio must be a number in \(0, 1\]"):
        create_model(NAME, keep_ratio=bad)


def test_cli_refuses_a_bad_keep_ratio_in_one_line(tmp_path, capsys):
    code = main(["train", "simclr", f"model.towers.image.model={NAME}", "model.towers.image.keep_ratio=2",
                 "train.steps=1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code != 0 and "keep_ratio must be a number in (0, 1]" in one_line_error(capsys)


def test_trains_under_simclr_from_the_cli(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "simclr", f"model.towers.image.model={NAME}", "model.towers.image.keep_ratio=0.25",
                 "train.steps=3", "data.batch_size=8", "data.options.n=16", "train.threads=1",
                 "model.objectives.simclr.hidden_dim=64", "--out", str(run), "--no-progress"]) == 0
    assert (run / "metrics.csv").exists()


def test_clip_with_a_biglittle_image_tower_lowers_its_loss():
    torch.manual_seed(0)
    tokenizer = load_tokenizer(TOKENIZERS_DIR / "shapes.json")
    model = build_model({"towers": {"image": {"model": NAME}, "text": TEXT_NANO}, "objectives": {"clip": {}}})
    batch = first_batch(model, open_source("shapes", split="train", n=16), tokenizer=tokenizer)
    opt = torch.optim.AdamW(model.param_groups(0.0, base_lr=3e-3))
    losses = []
    for _ in range(15):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3])


def test_semi_cross_attention_over_every_token_is_the_plain_block():
    from zir.models.biglittle import semi_cross_block

    torch.manual_seed(0)
    block = create_model(NAME).blocks[0].eval()
    x = torch.randn(2, 65, 64)
    order = torch.stack([torch.randperm(65) for _ in range(2)])
    with torch.no_grad():
        expected = torch.gather(block(x), 1, order[..., None].expand(-1, -1, 64))
        assert torch.allclose(semi_cross_block(block, x, order), expected, atol=1e-5)
        few = semi_cross_block(block, x, order[:, :8])  # a subset of queries still reads every key
        assert not torch.allclose(few, block(torch.gather(x, 1, order[:, :8, None].expand(-1, -1, 64))), atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = create_model(NAME, keep_ratio=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.forward_tokens(x).pow(2).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model.forward_tokens(x).pow(2).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert plain.keys() == grads.keys() and any(n.startswith("little.") for n in grads)
    assert all(torch.allclose(plain[n], grads[n], atol=1e-6) for n in plain)
