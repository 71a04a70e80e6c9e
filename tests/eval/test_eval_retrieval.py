"""Image-text retrieval metrics against known answers and a brute-force reference."""

import json

import pytest
import torch

from zir.errors import ShapeError
from zir.eval import evaluate_retrieval, retrieval_ranks


def unit(n: int, dim: int, seed: int) -> torch.Tensor:
    """Random unit vectors (N, D)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def brute_force_ranks(img, txt, owner):
    """Ranks written out query by query: sort candidates, find the first correct one."""
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    sim = (img @ txt.T).tolist()
    i2t = []
    for i, row in enumerate(sim):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        i2t.append(1 + min(r for r, j in enumerate(order) if owner[j] == i))
    t2i = []
    for j in range(len(owner)):
        col = [sim[i][j] for i in range(len(sim))]
        order = sorted(range(len(col)), key=lambda i: -col[i])
        t2i.append(1 + order.index(owner[j]))
    return i2t, t2i


def test_identical_embeddings_with_five_captions_each_are_perfect():
    img = unit(40, 32, seed=0)
    owner = torch.arange(40).repeat(5)[torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    result = evaluate_retrieval(img, img[owner], owner)
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            assert result[f"{direction}_R@{k}"] == 100.0
        assert result[f"{direction}_medr"] == 1.0 and result[f"{direction}_meanr"] == 1.0
    assert json.loads(json.dumps(result)) == result


def test_one_caption_each_defaults_to_the_diagonal():
    img = unit(30, 16, seed=2)
    result = evaluate_retrieval(img, 3.0 * img)  # text norm must not matter
    assert result["i2t_R@1"] == 100.0 and result["t2i_R@1"] == 100.0


def test_shuffled_pairing_is_near_chance():
    n_img, per_image = 200, 5
    img = unit(n_img, 64, seed=3)
    owner = torch.arange(n_img).repeat_interleave(per_image)
    txt = img[owner]
    shuffled = owner[torch.randperm(owner.numel(), generator=torch.Generator().manual_seed(4))]
    result = evaluate_retrieval(img, txt, shuffled)
    # Chance: t2i R@10 = 10/200 = 5%; i2t R@10 about 1 - (1 - 10/1000)^5 = 5%; median rank about half the list.
    assert result["t2i_R@10"] < 15.0 and result["i2t_R@10"] < 15.0
    assert result["t2i_R@1"] < 5.0 and result["i2t_R@1"] < 5.0
    assert 50 < result["t2i_medr"] < 150


def test_ranks_match_brute_force_on_random_features():
    img, txt = unit(25, 8, seed=5), unit(60, 8, seed=6)
    owner = torch.cat([torch.arange(25), torch.randint(0, 25, (35,), generator=torch.Generator().manual_seed(7))])
    i2t, t2i = retrieval_ranks(img, txt, owner)
    want_i2t, want_t2i = brute_force_ranks(img, txt, owner.tolist())
    assert i2t.tolist() == want_i2t and t2i.tolist() == want_t2i
    for chunk in (1, 4, 100):
        a, b = retrieval_ranks(img, txt, owner, chunk_size=chunk)
        assert a.tolist() == want_i2t and b.tolist() == want_t2i


def test_hand_computed_ranks_and_summary():
    # Two images on the axes, three captions: caption 0 is image 0's, captions 1 and 2 are image 1's.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.2]])
    i2t, t2i = retrieval_ranks(img, txt, [0, 1, 1])
    # Image 0 sees caption 1 and 2 above its own; image 1's best own caption (2) is beaten by caption 0.
    assert i2t.tolist() == [3, 2]
    # Caption 0 prefers image 1 (wrong); captions 1 and 2 prefer image 0 (wrong).
    assert t2i.tolist() == [2, 2, 2]
    result = evaluate_retrieval(img, txt, [0, 1, 1], ks=(1, 2))
    assert result["i2t_R@1"] == 0.0 and result["i2t_R@2"] == 50.0
    assert result["i2t_medr"] == 2.0 and result["i2t_meanr"] == 2.5  # floor of the median 2.5
    assert result["t2i_R@2"] == 100.0 and result["t2i_medr"] == 2.0


def test_collapsed_features_score_worst_not_best():
    img, txt = torch.ones(10, 4), torch.ones(10, 4)
    result = evaluate_retrieval(img, txt)
    assert result["i2t_R@1"] == 0.0 and result["t2i_medr"] == 10.0


def test_user_errors_are_zir_errors():
    img = unit(4, 8, seed=0)
    with pytest.raises(ShapeError, match="text_to_image is needed"):
        evaluate_retrieval(img, unit(5, 8, seed=1))
    with pytest.raises(ShapeError, match="image 3 has no caption"):
        evaluate_retrieval(img, unit(4, 8, seed=1), [0, 1, 2, 2])
    with pytest.raises(ShapeError, match=r"must index the 4 images, got values in \[0, 4\]"):
        evaluate_retrieval(img, unit(4, 8, seed=1), [0, 1, 2, 4])
    with pytest.raises(ShapeError, match="width"):
        evaluate_retrieval(img, unit(4, 6, seed=1))
