"""KoLeo, the Kozachenko-Leonenko entropy regulariser (Sablayrolles et al., 2019, "Spreading vectors for
similarity search"), as DINOv2 uses it.

Follows the paper's L_koleo = -1/n sum_i log(rho_i), rho_i = min_{j != i} ||f(x_i) - f(x_j)||, on L2-normalised
rows, with DINOv2's eps inside the log: maximising the log distance to the nearest neighbour spreads the batch
over the sphere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """-mean over i of log(distance from normalised x_i to its nearest other row + eps); x (B, D)."""
    z = F.normalize(x.float(), dim=-1, eps=1e-8)
    with torch.no_grad():
        dots = z @ z.T
        dots.fill_diagonal_(-2.0)  # never one's own neighbour
        nearest = dots.argmax(dim=1)
    dist = (z - z[nearest]).norm(dim=-1)
    return -torch.log(dist + eps).mean()
