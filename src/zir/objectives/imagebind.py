"""ImageBind (Girdhar et al., 2023): every other modality bound to one anchor, the image, and to nothing else.

One image projection into the joint space is shared by every pair; each bound tower (text, audio, ...) has
its own projection and its own CLIP loss (symmetric InfoNCE, learnable temperature) against the image
embedding of the same sample. No loss ever pairs two bound towers, so text and audio are aligned only
through images: classifying audio with the text tower's prompts is then *emergent* zero-shot, which
`zir eval` measures on audio data (`joint_space('audio')` below gives it the audio and text projections).

The paper starts from a frozen, pretrained CLIP for the image and text towers; here every tower learns from
scratch, so the image-text pair trains too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.losses import ClipLoss
from zir.objectives.base import Forward, Loss, Objective, register_objective, view_counts
from zir.objectives.clip import tower_width


def bound_view(tower: nn.Module) -> str:
    """The view a bound tower reads: `text_0` for a text tower, `audio_0` for an audio tower, else `image`."""
    return {"text": "text_0", "audio": "audio_0"}.get(tower.modality, "image")


class JointSpace:
    """One tower and the text tower of an ImageBind model in their shared space, as `zir eval` reads an
    image-text objective: `project_image` maps the tower's pooled features, `encode_text` token ids."""

    def __init__(self, owner: "ImageBind", tower_name: str, text_tower: str):
        self.owner, self.tower_name, self.text_tower_name = owner, tower_name, text_tower

    def _proj(self, name: str) -> nn.Module:
        return self.owner.anchor_proj if name == self.owner.tower_name else self.owner.proj[name]

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """The scored tower's pooled features (N, D) -> unit-norm (N, E) joint-space embeddings."""
        proj = self._proj(self.tower_name)
        return F.normalize(proj(pooled.to(proj.weight.dtype)), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> unit-norm (B, E) embeddings."""
        text = self.owner.towers[self.text_tower_name]
        return F.normalize(self._proj(self.text_tower_name)(text.pool(text.forward_tokens(ids))), dim=-1)

    def text_encoder(self, tokenizer) -> Callable[[Sequence[str]], torch.Tensor]:
        """A strings -> (T, E) function for `zir.eval.zeroshot_classifier`, tokenising with `tokenizer`."""
        device = self.owner.anchor_proj.weight.device

        @torch.no_grad()
        def encode(texts: Sequence[str]) -> torch.Tensor:
            return self.encode_text(tokenizer.encode(list(texts)).to(device))

        return encode


class ImageBind(Objective):
    """CLIP losses between the anchor (image) tower and each bound tower, through one shared image projection."""

    name = "imagebind"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        bind: Sequence[str] = ("text", "audio"),
        image_view: str = "image",
        embed_dim: int | None = None,
        temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        """Bind each tower named in `bind` to `tower`'s `image_view`; the joint space is `embed_dim` wide (the
        first bound tower's width unless given)."""
        super().__init__(towers, tower)
        if self.tower.modality != "image":
            raise ConfigError(f"objective imagebind: tower {tower!r} is an {self.tower.modality} tower, not an image tower; the anchor "
                              "every modality is bound to is an image tower")
        if isinstance(bind, str) or not bind or len(set(bind)) != len(bind):
            raise ConfigError(f"objective imagebind: bind={bind!r}: expected a list of distinct tower names, such as [text, audio]")
        for name in bind:
            if name not in towers or name == tower:
                raise ConfigError(f"objective imagebind: bind names {name!r}; expected towers of the model other than "
                                  f"the anchor {tower!r} ({', '.join(t for t in towers if t != tower)})")
        self.bound, self.image_view = list(bind), image_view
        self.embed_dim = int(embed_dim or tower_width(towers[self.bound[0]]))
        self.anchor_proj = nn.Linear(tower_width(self.tower), self.embed_dim, bias=False)
        nn.init.normal_(self.anchor_proj.weight, std=tower_width(self.tower) ** -0.5)
        self.proj = nn.ModuleDict()
        self.losses = nn.ModuleDict()
        for name in self.bound:
            width = tower_width(towers[name])
            self.proj[name] = nn.Linear(width, self.embed_dim, bias=False)
            nn.init.normal_(self.proj[name].weight, std=width ** -0.5)
            self.losses[name] = ClipLoss(temperature, max_scale, learn_temperature, gather_distributed)

    def view_plan(self) -> dict:
        """The image view (lightly augmented) and each bound tower's view."""
        plan: dict = view_counts([self.image_view] + [bound_view(self.towers[n]) for n in self.bound])
        if self.image_view == "image":
            plan.update(pipeline="light")
        return plan

    def forwards(self) -> list[Forward]:
        """The anchor tower on its image view, then each bound tower on its own view."""
        return [Forward(self.tower_name, self.image_view)] + [Forward(n, bound_view(self.towers[n])) for n in self.bound]

    def forward(self, batch, features) -> Loss:
        """The mean of the image-to-each-bound-tower CLIP losses; metrics: each pair's loss and batch top-1."""
        anchor, *others = self.forwards()
        image = self.anchor_proj(self.tower.pool(features[anchor]))
        total, metrics = 0.0, {}
        for name, f in zip(self.bound, others):
            other = self.proj[name](self.towers[name].pool(features[f]))
            loss = self.losses[name](image, other)
            hits = (F.normalize(image, dim=-1) @ F.normalize(other, dim=-1).T).argmax(dim=1)
            metrics[f"{name}_loss"] = float(loss.detach())
            metrics[f"{name}_acc"] = float((hits == torch.arange(len(hits), device=hits.device)).float().mean())
            total = total + loss
        return Loss(total / len(self.bound), metrics)

    def after_step(self, step: int, total_steps: int) -> None:
        """Clamp each pair's learnable temperature, as CLIP does after each update."""
        super().after_step(step, total_steps)
        for loss in self.losses.values():
            loss.clamp_()

    def no_weight_decay(self) -> set[str]:
        """The temperatures are not decayed."""
        return {f"losses.{name}.logit_scale" for name in self.bound}

    def joint_space(self, tower_name: str) -> JointSpace | None:
        """`tower_name` (the anchor or a bound tower) and the bound text tower in the joint space, or None
        when the objective binds no text tower or does not read `tower_name`."""
        texts = [n for n in self.bound if self.towers[n].modality == "text"]
        if not texts or (tower_name != self.tower_name and tower_name not in self.bound):
            return None
        return JointSpace(self, tower_name, texts[0])


register_objective("imagebind", ImageBind)
