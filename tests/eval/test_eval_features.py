"""Feature extraction: shapes, labels, eval mode, normalisation and the on-disk cache."""

import pytest
import torch

from zir.errors import ConfigError, ShapeError
from zir.eval import FeatureCacheError, extract_features


class Tower(torch.nn.Module):
    """A tiny encoder (B, 3) -> (B, 4) that records calls and whether it ran in training mode."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.drop = torch.nn.Dropout(0.9)
        self.calls = 0
        self.modes: list[bool] = []

    def forward(self, x):
        self.calls += 1
        self.modes.append(self.training)
        return self.drop(self.proj(x))

    def encode(self, x):
        return self.forward(x)


def batches(n_batches=3, batch=5):
    """(images (B, 3), labels (B,)) pairs."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, generator=g), torch.arange(batch) + 10 * i) for i in range(n_batches)]


def test_features_and_labels_in_order_without_grad_in_eval_mode():
    tower = Tower()
    data = batches()
    feats, labels = extract_features(tower, data)
    assert feats.shape == (15, 4) and feats.dtype == torch.float32 and not feats.requires_grad
    assert labels.tolist() == [l for _, y in data for l in y.tolist()]
    with torch.no_grad():
        tower.eval()
        torch.testing.assert_close(feats, tower(torch.cat([x for x, _ in data])))
    assert tower.modes[:3] == [False] * 3


def test_bound_method_gets_eval_mode_and_training_mode_is_restored():
    tower = Tower().train()
    extract_features(tower.encode, batches())
    assert tower.modes == [False] * 3 and tower.training


def test_normalize_gives_unit_rows():
    feats, _ = extract_features(Tower(), batches(), normalize=True)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(15))


def test_batches_without_labels_dicts_and_captions():
    tower = Tower()
    feats, labels = extract_features(tower, [x for x, _ in batches()])
    assert feats.shape == (15, 4) and labels is None
    dicts = [{"pixels": x, "y": y} for x, y in batches()]
    feats, labels = extract_features(tower, dicts, input_key="pixels", label_key="y")
    assert labels.shape == (15,)
    lengths, _ = extract_features(lambda texts: torch.tensor([[float(len(t))] for t in texts]), [["a", "bb"], ["ccc"]])
    assert lengths.flatten().tolist() == [1.0, 2.0, 3.0]


def test_cache_extracts_once_and_keeps_raw_features(tmp_path):
    tower = Tower()
    first, labels = extract_features(tower, batches(), cache_dir=tmp_path, key="step0-test")
    assert tower.calls == 3 and (tmp_path / "step0-test.safetensors").is_file()
    again, labels_again = extract_features(tower, batches(), cache_dir=tmp_path, key="step0-test", normalize=True)
    assert tower.calls == 3  # read from disk, the tower never ran
    torch.testing.assert_close(again, torch.nn.functional.normalize(first, dim=1))
    assert torch.equal(labels, labels_again)
    extract_features(tower, batches(), cache_dir=tmp_path, key="step0-test", refresh=True)
    assert tower.calls == 6
    extract_features(tower, batches(), cache_dir=tmp_path, key="step0-val")
    assert tower.calls == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step0-test.safetensors", "step0-val.safetensors"]


def test_cache_without_labels_round_trips(tmp_path):
    feats, _ = extract_features(Tower(), [x for x, _ in batches()], cache_dir=tmp_path / "new", key="k")
    cached, labels = extract_features(Tower(), [], cache_dir=tmp_path / "new", key="k")
    assert labels is None and torch.equal(cached, feats)


def test_broken_cache_and_bad_keys_are_zir_errors(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FeatureCacheError, match="bad.safetensors"):
        extract_features(Tower(), batches(), cache_dir=tmp_path, key="bad")
    for key in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ConfigError, match="key"):
            extract_features(Tower(), batches(), cache_dir=tmp_path, key=key)
    with pytest.raises(ConfigError, match="both cache_dir and key"):
        extract_features(Tower(), batches(), cache_dir=tmp_path)


def test_bad_encoder_outputs_and_batches_are_shape_errors():
    with pytest.raises(ShapeError, match=r"\(B, D\)"):
        extract_features(lambda x: torch.zeros(x.shape[0], 2, 4), batches())
    with pytest.raises(ShapeError, match="no batches"):
        extract_features(Tower(), [])
    mixed = [batches()[0], batches()[1][0]]
    with pytest.raises(ShapeError, match="lacks labels"):
        extract_features(Tower(), mixed)
    with pytest.raises(ShapeError, match="do not match"):
        extract_features(Tower(), [(torch.randn(5, 3), torch.arange(4))])
