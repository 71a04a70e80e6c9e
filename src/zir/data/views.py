"""Typed views and named masks: what a batch holds and what an objective's forward reads.

A `View` is one input of a sample as a tower sees it: a DINO global crop (`global_0`), a local crop
(`local_3`), the lightly augmented `image`, a caption (`text_0`), a log-mel spectrogram of a time crop of
the recording (`audio_0`). Its name is the one string a recipe or a
batch uses; `View.parse` is the only place such a name is read.

A view carries any number of named masks (`MaskSpec`): objectives that name the same mask on the same view
read one masked encoding of it (MAE's reconstruction, FLIP-style contrastive, masked self-distillation
together cost one forward), objectives that name different masks get their own. Two objectives asking for
the same name with different settings is a configuration error, never a silent choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from zir.errors import ConfigError

VIEW_KINDS = ("global", "local", "image", "text", "audio")
MASK_GENERATORS = ("random", "block", "jepa_targets", "jepa_context")
DEFAULT_MASK = "mask"  # the name every masking objective uses unless its recipe gives `mask_name`


@dataclass(frozen=True, order=True)
class View:
    """One view of a sample: `kind` (global, local, image, text, audio) and its `index` among views of that kind."""

    kind: str
    index: int = 0

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ConfigError(f"view kind {self.kind!r}: expected one of {', '.join(VIEW_KINDS)}")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ConfigError(f"view index {self.index!r}: expected a whole number >= 0")
        if self.kind == "image" and self.index:
            raise ConfigError("view image: there is one `image` view (index 0)")

    @classmethod
    def parse(cls, name: "str | View") -> "View":
        """`global_1` -> View('global', 1); `image` -> View('image'); a View is returned as it is."""
        if isinstance(name, View):
            return name
        if not isinstance(name, str):
            raise ConfigError(f"view {name!r}: expected a name such as global_0, local_0, image, text_0 or audio_0")
        if name == "image":
            return cls("image")
        kind, _, index = name.partition("_")
        if kind in ("global", "local", "text", "audio") and index.isdigit():
            return cls(kind, int(index))
        raise ConfigError(f"view {name!r}: expected global_<i>, local_<i>, image, text_<i> or audio_<i>")

    @property
    def name(self) -> str:
        """The view's name in recipes and batches: global_0, local_2, image, text_0, audio_0."""
        return "image" if self.kind == "image" else f"{self.kind}_{self.index}"

    @property
    def modality(self) -> str:
        """`text` for captions, `audio` for spectrograms, `image` for every crop."""
        return self.kind if self.kind in ("text", "audio") else "image"

    @property
    def size_class(self) -> str:
        """Views of one size class have the same shape: `full` (global crops and image), `local`, `text`, `audio`."""
        return "full" if self.kind in ("global", "image") else self.kind

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class MaskSpec:
    """A named patch mask on a view: `ratio` of the patches hidden, drawn by `generator`.

    `patch_size` is the side in pixels of the squares masked together (SimMIM); None: the tower's patch.
    `generator` is `random` (MAE), `block` (BEiT, iBOT), `jepa_targets` (I-JEPA's target blocks, `blocks`
    of them, their union hidden) or `jepa_context` (I-JEPA's context: the patches of one large block that
    are not in the mask named by `outside`, on the same view).
    """

    name: str = DEFAULT_MASK
    ratio: float = 0.5
    generator: str = "random"
    patch_size: int | None = None
    blocks: int = 4
    outside: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"mask name {self.name!r}: expected a plain name such as mask or mae")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"mask {self.name}: ratio={self.ratio!r}: expected a fraction 0 < ratio < 1 of patches hidden")
        if self.generator not in MASK_GENERATORS:
            raise ConfigError(f"mask {self.name}: generator={self.generator!r}: expected one of {', '.join(MASK_GENERATORS)}")
        if self.generator == "jepa_context" and not self.outside:
            raise ConfigError(f"mask {self.name}: a jepa_context mask names the target mask it avoids (outside: targets)")
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1:
            raise ConfigError(f"mask {self.name}: blocks={self.blocks!r}: expected a whole number >= 1")

    def describe(self) -> str:
        """One line for error messages: `mae (random, 0.75)`."""
        size = f", {self.patch_size} px squares" if self.patch_size else ""
        return f"{self.name} ({self.generator}, {self.ratio:g}{size})"


def view_counts(views) -> dict:
    """The `ViewPlan` counts that make the named views exist: [global_1, local_0] -> {global: 2, local: 1, text: 0}.

    Global crops are always counted (0 when none is named), so an objective on the `image` view alone does not
    make the loader produce the plan's default two global crops that nobody reads."""
    plan: dict = {"global": 0}
    for v in views:
        v = View.parse(v)
        if v.kind == "image":
            plan["image"] = 1
        else:
            plan[v.kind] = max(plan.get(v.kind, 0), v.index + 1)
    return plan
