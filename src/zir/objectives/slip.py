"""SLIP (Mu et al., 2022): CLIP plus SimCLR, the image features of one view shared between them.

By default CLIP reads the first of the two SimCLR views, so a step costs two image forwards and one text
forward. SLIP's own code gives CLIP a third, lightly augmented view instead (`clip_view="image"`): a third
image forward, but captions then meet images whose colours SimCLR's jitter has not changed, which matters
when captions name colours (on 16-pixel built-in shapes, CLIP's loss stayed at log B with the shared view).
The loss is CLIP's plus `ssl_weight` times SimCLR's NT-Xent; published: ssl_weight 1.0, SimCLR temperature 0.1.
"""

from __future__ import annotations

from torch import nn

from zir.objectives.base import Forward, Loss, Objective, register_objective
from zir.objectives.clip import CLIP
from zir.objectives.simclr import SimCLR


class SLIP(Objective):
    """CLIP on `views[0]` and SimCLR on `views`, sharing the image tower's features of `views[0]`."""

    name = "slip"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        text_tower: str = "text",
        views: tuple[str, str] | list[str] = ("global_0", "global_1"),
        text_view: str = "text_0",
        embed_dim: int | None = None,
        temperature: float = 0.07,
        ssl_temperature: float = 0.1,
        ssl_weight: float = 1.0,
        hidden_dim: int = 512,
        out_dim: int = 128,
        gather_distributed: bool = True,
        clip_view: str | None = None,
    ) -> None:
        """A CLIP objective on `clip_view` (default: the first SimCLR view) and a SimCLR objective."""
        super().__init__(towers, tower)
        views = tuple(views)
        self.clip = CLIP(towers, tower, text_tower, clip_view or views[0], text_view, embed_dim,
                         temperature=temperature, gather_distributed=gather_distributed)
        self.simclr = SimCLR(towers, tower, views, ssl_temperature, hidden_dim, out_dim)
        self.ssl_weight = float(ssl_weight)

    def view_plan(self) -> dict:
        """SimCLR's augmented global views, CLIP's text view, and its light `image` view when it has one."""
        clip = self.clip.view_plan()
        return {**self.simclr.view_plan(), "text": clip["text"], **({"image": 1} if clip.get("image") else {})}

    def forwards(self) -> list[Forward]:
        """Both SimCLR views (the first shared with CLIP unless `clip_view` is set), CLIP's view and the text view."""
        return list(dict.fromkeys(self.clip.forwards() + self.simclr.forwards()))

    def forward(self, batch, features) -> Loss:
        """CLIP loss + ssl_weight * SimCLR loss, with each part's loss and accuracy as metrics."""
        clip, ssl = self.clip(batch, features), self.simclr(batch, features)
        metrics = {"clip_loss": float(clip.value.detach()), "simclr_loss": float(ssl.value.detach())}
        metrics.update({f"clip_{k}": v for k, v in clip.metrics.items()})
        metrics.update({f"simclr_{k}": v for k, v in ssl.metrics.items()})
        return Loss(clip.value + self.ssl_weight * ssl.value, metrics)

    def after_step(self, step: int, total_steps: int) -> None:
        """CLIP's temperature clamp."""
        self.clip.after_step(step, total_steps)

    def no_weight_decay(self) -> set[str]:
        """CLIP's temperature."""
        return {f"clip.{n}" for n in self.clip.no_weight_decay()}


register_objective("slip", SLIP)
