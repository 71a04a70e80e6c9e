"""The tower protocol: what every encoder in the zoo provides, so objectives, the model and eval never probe.

A tower turns one modality's input into token features (B, P + N, D): `num_prefix_tokens` prefix tokens
(CLS, distillation, registers) first, then N content tokens (image patches in row-major order of
`token_grid`, or text positions). What a tower can do beyond plain encoding is stated by capability flags,
and an objective that needs a capability checks the flag once, when the model is built (`require`).

    modality            "image", "audio" or "text"
    embed_dim           D, the width of the output tokens
    num_prefix_tokens   P
    img_size            native (H, W) of an image tower, (mel bins, frames) of an audio tower; None for text
    patch_size          (h, w) pixels (bins, frames) per patch (the unit `keep`/`mask` index); None for text
    token_grid          patch grid (rows, cols) at `img_size`; None for text
    has_class_token     pool() reads token 0 (else it averages the content tokens)
    can_drop_tokens     forward_tokens(x, keep) encodes only the kept patches (MAE, FLIP)
    has_mask_token      forward_tokens(x, mask=m) replaces masked patches by the tower's own token (iBOT, SimMIM),
                        the parameter `mask_token` (1, 1, D)
    feature_stride      (h, w) pixels per output token of an image tower (patch_size for a ViT); None for text
    in_chans            input channels of an image tower; None for text
    can_return_attention  forward_with_attention(x) exists (attention maps, saliency)

    forward_tokens(x, keep=None, mask=None) -> (B, P + K or P + N, D)
    pool(tokens) -> (B, D)
    check_size(height, width)   raise a ShapeError for an input side the tower cannot take
    no_weight_decay() -> set of parameter names; layer_index(name) -> depth for layer-wise lr decay
    set_grad_checkpointing(enable); set_attention_impl(impl)
    adapt_state_dict(state) -> (state, notes)   foreign checkpoint layouts (identity when there are none)

An audio tower reads (B, in_chans, n_mels, frames) log-mel spectrograms and is also an `AudioInput`: its
`spectrogram` names the front end it was built for (sample rate, STFT, mel bins, frames), which the data
side computes for it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from zir.errors import ConfigError, ShapeError

MODALITIES = ("image", "audio", "text")
GRID_MODALITIES = ("image", "audio")  # towers over a patch grid (images, spectrograms)
CAPABILITIES = {  # flag -> what an objective needing it does with the tower, for the one-line refusal
    "can_drop_tokens": "drop patches",
    "has_mask_token": "fill masked patches with a mask token",
}


@runtime_checkable
class Tower(Protocol):
    """An encoder zir can train: see the module docstring for what each member means."""

    modality: str
    embed_dim: int
    num_prefix_tokens: int
    img_size: tuple[int, int] | None
    patch_size: tuple[int, int] | None
    token_grid: tuple[int, int] | None
    feature_stride: tuple[int, int] | None
    in_chans: int | None
    has_class_token: bool
    can_drop_tokens: bool
    has_mask_token: bool
    can_return_attention: bool

    def forward_tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> torch.Tensor: ...

    def pool(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def check_size(self, height: int, width: int) -> None: ...

    def no_weight_decay(self) -> set[str]: ...

    def layer_index(self, param_name: str) -> int: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...

    def set_attention_impl(self, impl: str) -> None: ...

    def adapt_state_dict(self, state: dict) -> tuple[dict, list[str]]: ...


@runtime_checkable
class AudioInput(Protocol):
    """What an audio tower adds: `spectrogram`, the front end's settings (`zir.data.spectrogram.Spectrogram`)."""

    spectrogram: dict


PROTOCOL_MEMBERS = (
    "modality", "embed_dim", "num_prefix_tokens", "img_size", "patch_size", "token_grid", "feature_stride",
    "in_chans", "has_class_token",
    "can_drop_tokens", "has_mask_token", "can_return_attention", "forward_tokens", "pool", "check_size",
    "no_weight_decay", "layer_index", "set_grad_checkpointing", "set_attention_impl", "adapt_state_dict",
)


def check_tower(tower: object, where: str) -> None:
    """Raise a one-line ConfigError when `tower` (a zoo entry or a registered factory's) is not a Tower."""
    if not isinstance(tower, Tower):
        missing = sorted(set(PROTOCOL_MEMBERS) - set(dir(tower)))
        raise ConfigError(f"{where}: {type(tower).__name__} is not a zir tower; it lacks {', '.join(missing)} "
                          "(see docs/models.md, 'The tower protocol')")
    if tower.modality not in MODALITIES:
        raise ConfigError(f"{where}: {type(tower).__name__}.modality={tower.modality!r}; expected image, audio or text")
    if tower.modality == "audio" and not isinstance(tower, AudioInput):
        raise ConfigError(f"{where}: {type(tower).__name__} is an audio tower without `spectrogram`, the front end "
                          "it reads (sample_rate, n_fft, hop_length, n_mels, frames)")


def require(objective: str, tower_name: str, tower: Tower, capability: str, hint: str = "") -> None:
    """Refuse, in one line naming objective, tower and capability, a tower that lacks what an objective needs."""
    if capability in ("image", "patches"):
        wanted = ("image",) if capability == "image" else GRID_MODALITIES
        if tower.modality not in wanted:
            article = "an" if tower.modality[0] in "aeiou" else "a"
            raise ConfigError(f"{objective}: the {type(tower).__name__} tower {tower_name!r} is {article} {tower.modality} "
                              f"tower; {objective} needs an {' or '.join(wanted)} tower")
        return
    if not {"can_drop_tokens": tower.can_drop_tokens, "has_mask_token": tower.has_mask_token}[capability]:
        raise ConfigError(f"{objective}: the {type(tower).__name__} tower {tower_name!r} cannot "
                          f"{CAPABILITIES[capability]} ({capability} is False){'; ' + hint if hint else ''}")


def check_keep(keep: torch.Tensor, batch: int, num_patches: int) -> torch.Tensor:
    """Validate a (B, K) integer tensor of patch indices to encode; returns it as int64."""
    if keep.dtype not in (torch.int64, torch.int32) or keep.ndim != 2 or keep.shape[0] != batch:
        raise ShapeError(
            f"keep must be a (B={batch}, K) integer tensor of patch indices; got {keep.dtype} {tuple(keep.shape)}"
        )
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= num_patches):
        raise ShapeError(f"keep indices must lie in [0, {num_patches}); got [{int(keep.min())}, {int(keep.max())}]")
    return keep.long()


def check_mask(mask: torch.Tensor, batch: int, num_patches: int) -> torch.Tensor:
    """Validate a (B, N) mask of patches to replace by the mask token (True = masked); returns it as bool."""
    if mask.shape != (batch, num_patches):
        raise ShapeError(f"mask must have shape (B={batch}, N={num_patches}); got {tuple(mask.shape)}")
    return mask.bool()


def refuse_masking(tower: object, keep: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    """For towers that can neither drop nor mask patches: a ConfigError if either was asked for."""
    if keep is not None or mask is not None:
        raise ConfigError(f"{type(tower).__name__} is convolutional and cannot drop or mask tokens; "
                          "use keep=None and mask=None")


class TextTowerMembers:
    """Mixin: the protocol members every text tower shares (no image sizes, no patch masking).

    Text towers return (B, 1 + L, width): a pooled sentence token first (so `num_prefix_tokens` is 1 and
    `has_class_token` is True), then every position; `causal` says whether position i sees only 0..i.
    The class mixing it in sets `context_length` (the most token positions it reads) and `pad_id`.
    """

    modality = "text"
    num_prefix_tokens = 1
    img_size = patch_size = token_grid = feature_stride = in_chans = None
    has_class_token = True
    can_drop_tokens = False
    has_mask_token = False
    can_return_attention = False
    causal = False
    caption_length = None  # what the tower's own tokenizer pads captions to, when it ships one

    def tokenizer_file(self):
        """The tokenizer.json that goes with the tower's shipped weights, or None (the recipe names one)."""
        return None

    def check_size(self, height: int, width: int) -> None:
        """Text towers take token ids, never images."""
        raise ShapeError(f"{type(self).__name__} is a text tower; it takes (B, L) token ids, not {height}x{width} images")

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """zir's own layout: nothing to convert."""
        return dict(state), []

    @staticmethod
    def refuse_patches(keep: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        """Text towers encode every token: `keep` and `mask` are for image towers."""
        if keep is not None or mask is not None:
            raise ConfigError("text towers encode every token; `keep` and `mask` (patch masking) are for image towers")
