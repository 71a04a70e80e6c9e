"""The causal CLIP text tower: pooling position, causality, zoo sizes with published counts, errors."""

import pytest
import torch

from zir import count_parameters, create_model
from zir.errors import ConfigError, ShapeError
from zir.models.text import TextTransformer, eot_positions


def _tower(**kw):
    torch.manual_seed(0)
    return create_model("text_nano", **kw).eval()


def test_eot_position_is_last_non_pad_or_first_eot_id():
    ids = torch.tensor([[1, 7, 9, 2, 0, 0], [1, 5, 2, 0, 0, 0], [1, 3, 4, 5, 6, 2]])
    assert eot_positions(ids).tolist() == [3, 2, 5]
    padded_with_eot = torch.tensor([[1, 7, 2, 2, 2], [1, 2, 2, 2, 2]])
    assert eot_positions(padded_with_eot, pad_id=2, eot_id=2).tolist() == [2, 1]


def test_tokens_layout_and_pool_reads_the_eot_feature():
    tower = _tower()
    ids = torch.tensor([[1, 7, 9, 2, 0, 0], [1, 5, 2, 0, 0, 0]])
    tokens = tower.forward_tokens(ids)
    assert tokens.shape == (2, 7, 64) and tower.num_prefix_tokens == 1
    assert torch.equal(tokens[0, 0], tokens[0, 1 + 3]) and torch.equal(tokens[1, 0], tokens[1, 1 + 2])
    assert tower.pool(tokens).shape == (2, 64)
    assert torch.allclose(tower(ids), tower.proj(tokens[:, 0]))


def test_causal_mask_hides_later_tokens_and_padding():
    tower = _tower()
    ids = torch.tensor([[1, 7, 9, 2, 0, 0, 0, 0]])
    changed = ids.clone()
    changed[0, 5] = 11  # a later token changes no earlier position's feature
    a, b = tower.forward_tokens(ids), tower.forward_tokens(changed)
    assert torch.allclose(a[:, 1:6], b[:, 1:6], atol=1e-6) and not torch.allclose(a[:, 6:], b[:, 6:])
    short = tower(ids[:, :4])  # fewer padding positions: same embedding
    assert torch.allclose(short, tower(ids), atol=1e-5)
    bidirectional = _tower(causal=False)
    assert not torch.allclose(bidirectional.forward_tokens(ids)[:, 1], bidirectional.forward_tokens(changed)[:, 1])


def test_grad_checkpointing_gives_the_same_gradients():
    tower = _tower()
    ids = torch.randint(3, 512, (3, 10))
    tower(ids).square().sum().backward()
    want = tower.token_embedding.weight.grad.clone()
    tower.zero_grad()
    tower.set_grad_checkpointing()
    tower(ids).square().sum().backward()
    assert torch.allclose(tower.token_embedding.weight.grad, want, atol=1e-6)


def test_clip_text_sizes_have_published_parameter_counts():
    assert count_parameters("clip_text_base") == 63_428_096  # CLIP: "a 63M-parameter 12-layer 512-wide model"
    assert count_parameters("clip_text_large") == 123_650_304  # CLIP ViT-L/14 text tower, 123.65M
    assert count_parameters("text_micro") < 2_000_000


def test_text_tower_errors_name_the_problem():
    tower = _tower()
    with pytest.raises(ShapeError, match="context_length=16"):
        tower(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ShapeError, match="vocabulary of 512"):
        tower(torch.tensor([[1, 600, 2]]))
    with pytest.raises(ShapeError, match="integer token ids"):
        tower(torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="keep"):
        tower.forward_tokens(torch.tensor([[1, 2]]), keep=torch.tensor([[0]]))
    with pytest.raises(ConfigError, match="no option"):
        create_model("text_nano", patch_size=4)
    assert isinstance(tower, TextTransformer)
