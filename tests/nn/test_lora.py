"""LoRALinear: exact at init, its merge computes the same outputs, and a state dict merges without the module."""

from __future__ import annotations

import torch
from torch import nn

from zir.nn.lora import LoRALinear, has_lora, is_lora_key, merge_lora, merge_lora_state


def _layer(rank: int = 3, alpha: float = 6.0, bias: bool = True) -> tuple[nn.Linear, LoRALinear]:
    torch.manual_seed(0)
    base = nn.Linear(10, 7, bias=bias)
    return base, LoRALinear(base, rank, alpha)


def test_lora_at_init_computes_exactly_the_wrapped_layer():
    base, lora = _layer()
    x = torch.randn(4, 5, 10)
    assert torch.equal(lora(x), base(x))
    assert lora.weight is base.weight and lora.bias is base.bias  # same tensors, same state-dict names
    assert set(lora.state_dict()) == {"weight", "bias", "lora_a", "lora_b", "lora_scale"}
    assert float(lora.lora_scale) == 2.0 and lora.lora_a.abs().sum() > 0 and not lora.lora_b.any()


def test_merged_layer_and_merged_state_give_the_adapted_outputs():
    base, lora = _layer(bias=False)
    with torch.no_grad():
        lora.lora_b.normal_()
    x = torch.randn(6, 10)
    adapted = lora(x)
    assert (adapted - base(x)).abs().max() > 0.1  # the update changes the outputs
    merged = lora.merged()
    assert type(merged) is nn.Linear and torch.allclose(merged(x), adapted, atol=1e-5)
    state = merge_lora_state(lora.state_dict())
    assert set(state) == {"weight"} and not has_lora(state)
    plain = nn.Linear(10, 7, bias=False)
    plain.load_state_dict(state)
    assert torch.allclose(plain(x), adapted, atol=1e-5)


def test_merge_lora_replaces_every_adapted_layer_in_place():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 3)))
    net[0] = LoRALinear(net[0], 2, 4.0)
    net[2][0] = LoRALinear(net[2][0], 2, 4.0)
    with torch.no_grad():
        net[0].lora_b.normal_()
        net[2][0].lora_b.normal_()
    x = torch.randn(5, 4)
    before = net(x)
    merge_lora(net)
    assert not any(isinstance(m, LoRALinear) for m in net.modules())
    assert torch.allclose(net(x), before, atol=1e-5)
    assert is_lora_key("blocks.0.attn.qkv.lora_b") and not is_lora_key("blocks.0.attn.qkv.weight")
