"""`model.adapt`: parameter-efficient fine-tuning of a recipe's towers (LoRA, frozen backbones).

    model:
      adapt:
        towers: [image]                     # which towers (default: every tower)
        lora: {rank: 4, alpha: 8, targets: [qkv, proj, fc1, fc2], dropout: 0.0}
        trainable: lora                     # what of the towers trains: lora | bias | {last_blocks: N} | all

`lora` puts a rank-r update (`zir.nn.lora.LoRALinear`) on every nn.Linear of the tower whose attribute name
is in `targets` (a ViT's attention `qkv` and `proj`, its MLP's `fc1` and `fc2`). `trainable` says which of
the tower's own parameters keep training: `lora` none (only the LoRA factors; the default with `lora`),
`bias` the biases (BitFit), `{last_blocks: N}` the last N blocks and what follows them (N = 0: the final
norm only), `all` every one (the default without `lora`). LoRA factors always train, and so do the heads
of the objectives (a fine-tuning classifier, a projection), which are not part of a tower.

Applied when the model is built, before EMA teachers copy their towers, so a run folder's config rebuilds
the same modules its checkpoints hold; `zir export` folds the updates into the weights (`merge_lora_state`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from zir.errors import ConfigError
from zir.nn.lora import LoRALinear

FIELD = "model.adapt"
DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")
TRAINABLE = ("lora", "bias", "all", "{last_blocks: N}")


@dataclass
class LoraSpec:
    """Rank r, alpha (the update is scaled by alpha / r), which linears by attribute name, input dropout."""

    rank: int = 4
    alpha: float = 8.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0


@dataclass
class AdaptSpec:
    """Which towers, their LoRA (or None) and which of their own parameters train."""

    towers: list[str] | None = None
    lora: LoraSpec | None = None
    trainable: str = "all"  # lora | bias | all | last_blocks
    last_blocks: int = 0


def _number(value, where: str, kind: type, low: float, what: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}={value!r}: expected {what}")
    if value < low:
        raise ConfigError(f"{where}={value!r}: expected {what}")
    return kind(value)


def _parse_lora(value) -> LoraSpec:
    where = f"{FIELD}.lora"
    if value is True or value == {}:
        return LoraSpec()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}={value!r}: expected a mapping such as {{rank: 4, alpha: 8, targets: [qkv, proj]}}")
    unknown = sorted(set(value) - {"rank", "alpha", "targets", "dropout"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: no such field; expected rank, alpha, targets, dropout")
    spec = LoraSpec()
    if "rank" in value:
        spec.rank = _number(value["rank"], f"{where}.rank", int, 1, "a whole number >= 1")
    spec.alpha = float(spec.rank * 2)  # the common alpha = 2r unless given
    if "alpha" in value:
        spec.alpha = _number(value["alpha"], f"{where}.alpha", float, 1e-12, "a number > 0")
    if "dropout" in value:
        spec.dropout = _number(value["dropout"], f"{where}.dropout", float, 0.0, "a number in [0, 1)")
        if spec.dropout >= 1:
            raise ConfigError(f"{where}.dropout={value['dropout']!r}: expected a number in [0, 1)")
    if "targets" in value:
        targets = value["targets"]
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError(f"{where}.targets={value['targets']!r}: expected a list of linear layer names "
                              f"such as [{', '.join(DEFAULT_TARGETS)}]")
        spec.targets = tuple(dict.fromkeys(targets))
    return spec


def parse_adapt(value) -> AdaptSpec | None:
    """The `model.adapt` field as an AdaptSpec (None when unset); a one-line ConfigError when malformed."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{FIELD}={value!r}: expected a mapping with lora, trainable and towers")
    unknown = sorted(set(value) - {"towers", "lora", "trainable"})
    if unknown:
        raise ConfigError(f"{FIELD}.{unknown[0]}: no such field; expected lora, trainable, towers")
    spec = AdaptSpec()
    towers = value.get("towers")
    if towers is not None:
        towers = [towers] if isinstance(towers, str) else towers
        if not isinstance(towers, list) or not towers or not all(isinstance(t, str) for t in towers):
            raise ConfigError(f"{FIELD}.towers={value['towers']!r}: expected a list of tower names such as [image]")
        spec.towers = list(towers)
    if value.get("lora") not in (None, False):
        spec.lora = _parse_lora(value["lora"])
    trainable = value.get("trainable", "lora" if spec.lora else "all")
    if isinstance(trainable, dict) and set(trainable) == {"last_blocks"}:
        spec.trainable = "last_blocks"
        spec.last_blocks = _number(trainable["last_blocks"], f"{FIELD}.trainable.last_blocks", int, 0, "a whole number >= 0")
    elif trainable in ("lora", "bias", "all"):
        spec.trainable = trainable
    else:
        raise ConfigError(f"{FIELD}.trainable={trainable!r}: expected one of {', '.join(TRAINABLE)}")
    if spec.trainable == "lora" and spec.lora is None:
        raise ConfigError(f"{FIELD}.trainable=lora: needs {FIELD}.lora (rank, alpha, targets)")
    return spec


def add_lora(tower: nn.Module, spec: LoraSpec, where: str) -> int:
    """Wrap each target nn.Linear of `tower` in a LoRALinear, in place; returns how many were wrapped."""
    found: dict[str, int] = {}
    linears = set()
    for parent in list(tower.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                linears.add(name)
                if name in spec.targets:
                    setattr(parent, name, LoRALinear(child, spec.rank, spec.alpha, spec.dropout))
                    found[name] = found.get(name, 0) + 1
    missing = [t for t in spec.targets if t not in found]
    if missing:
        have = ", ".join(sorted(linears)) or "none"
        raise ConfigError(f"{FIELD}.lora.targets: {where} has no linear layer named {missing[0]!r} "
                          f"(its linear layers: {have})")
    return sum(found.values())


def _trains(tower: nn.Module, name: str, spec: AdaptSpec, top: int) -> bool:
    """Whether the tower's own parameter `name` keeps training under `spec.trainable`."""
    if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b"):
        return True
    if spec.trainable == "all":
        return True
    if spec.trainable == "bias":
        return name.rsplit(".", 1)[-1] == "bias"
    if spec.trainable == "last_blocks":
        return tower.layer_index(name) >= top - spec.last_blocks
    return False


def adapt_towers(towers: dict[str, nn.Module], value) -> AdaptSpec | None:
    """Apply `model.adapt` to the towers (before a model is built around them); returns the spec or None."""
    spec = parse_adapt(value)
    if spec is None:
        return None
    names = spec.towers if spec.towers is not None else list(towers)
    for name in names:
        if name not in towers:
            raise ConfigError(f"{FIELD}.towers: {name!r} is not a tower of this model ({', '.join(towers)})")
    for name in names:
        tower = towers[name]
        if spec.lora is not None:
            add_lora(tower, spec.lora, f"tower {name!r} ({type(tower).__name__})")
        named = list(tower.named_parameters())
        top = max((tower.layer_index(n) for n, _ in named), default=0)
        for pname, param in named:
            param.requires_grad_(_trains(tower, pname, spec, top))
    return spec


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of a model's towers and objectives; EMA teachers, copies, are left out."""
    seen: set[int] = set()
    trainable = total = 0
    parts = [model.towers, model.objectives] if isinstance(getattr(model, "towers", None), nn.ModuleDict) else [model]
    for part in parts:
        for p in part.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return trainable, total
