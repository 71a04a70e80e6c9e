"""The heads objectives put on a tower's features, in one module: the MLP of the two-view objectives (SimCLR,
BYOL, MoCo v3, VICReg, Barlow Twins; its depth, biases and last norm set by each paper's design), SimSiam's
predictor, DINO's projection head (DINO, iBOT, masked_dino) and the classifier of supervised training.

Decoders and predictors that are an objective's own machinery (MAE's decoder, CoCa's multimodal decoder,
I-JEPA's predictor transformer) stay in their objective's file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError


class MLPHead(nn.Module):
    """Linear-BN-ReLU (`layers` - 1 times), then Linear, optionally a BatchNorm without affine: (B, in) -> (B, out).

    BYOL: 2 layers with biases, no last BN; MoCo v3: linears without bias (the BN follows), last BN in the
    projector (SimCLR's design) and, for ViTs, in the predictor too.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, bias: bool = True,
                 last_bn: bool = False) -> None:
        """A `layers`-deep MLP in_dim -> hidden_dim ... -> out_dim."""
        super().__init__()
        if layers < 1 or hidden_dim < 1 or out_dim < 1:
            raise ConfigError(f"MLP head layers={layers}, hidden_dim={hidden_dim}, out_dim={out_dim}: expected >= 1 each")
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, hidden_dim, bias=bias), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        mods.append(nn.Linear(dim, out_dim, bias=bias))
        if last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.net(x)


class SimSiamPredictor(nn.Module):
    """SimSiam's predictor: Linear-BN-ReLU to a bottleneck, then Linear back, (B, dim) -> (B, dim)."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        """A two-layer MLP through `bottleneck` units."""
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, bottleneck, bias=False), nn.BatchNorm1d(bottleneck), nn.ReLU(inplace=True),
                                 nn.Linear(bottleneck, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Projections -> predictions of the other view's projection."""
        return self.net(z)


class WeightNormLinear(nn.Module):
    """A bias-free linear layer with weight = g * v / ||v|| per output row; `fix_norm` freezes g at 1 (DINO)."""

    def __init__(self, in_dim: int, out_dim: int, fix_norm: bool = True) -> None:
        """(B, in_dim) -> (B, out_dim) with weight normalisation."""
        super().__init__()
        self.v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.v, std=0.02)
        self.g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)
        self.frozen = False  # DINO freezes the last layer in the first steps: no gradient reaches it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the normalised weight."""
        v, g = (self.v.detach(), self.g.detach()) if self.frozen else (self.v, self.g)
        return F.linear(x, g * F.normalize(v, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head: MLP (GELU) to a bottleneck, L2 normalisation, weight-normalised last layer.

    Shapes: (..., D) -> (..., out_dim); used on CLS embeddings (B, D) and on patch tokens (B, N, D) (iBOT).
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 layers: int = 3, norm_last_layer: bool = True) -> None:
        """A `layers`-deep MLP in_dim -> hidden_dim ... -> bottleneck_dim, then the last layer to out_dim."""
        super().__init__()
        if layers < 1:
            raise ConfigError(f"dino head layers={layers}: expected >= 1")
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, hidden_dim), nn.GELU()]
            dim = hidden_dim
        mods.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings -> logits over the `out_dim` prototypes."""
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return self.last_layer(x)


HEAD_NORMS = ("none", "layer", "batch")


class ClassifierHead(nn.Module):
    """An optional norm then a linear layer: pooled features (B, D) -> class logits (B, classes)."""

    def __init__(self, in_dim: int, num_classes: int, norm: str = "none", init_std: float = 2e-5) -> None:
        """`norm`: none, layer (LayerNorm) or batch (BatchNorm1d without affine, as MAE's linear probe)."""
        super().__init__()
        if norm not in HEAD_NORMS:
            raise ConfigError(f"supervised head_norm={norm!r}: expected one of {', '.join(HEAD_NORMS)}")
        self.norm = {"none": nn.Identity(), "layer": nn.LayerNorm(in_dim),
                     "batch": nn.BatchNorm1d(in_dim, affine=False, eps=1e-6)}[norm]
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features -> (B, classes) logits."""
        return self.fc(self.norm(x))
