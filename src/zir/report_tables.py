"""Tables the command line prints (rich), built from library calls so tests can read their rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table


@dataclass
class TextTable:
    """A titled table of string cells that prints with rich and stays inspectable in tests."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    left: int = 1  # how many leading columns are text (left-aligned); the rest are numbers

    def print(self, console: Console | None = None) -> None:
        """Render to the terminal (or the given console)."""
        table = Table(title=self.title, caption=self.caption or None)
        for i, column in enumerate(self.columns):
            table.add_column(column, justify="left" if i < self.left else "right")
        for row in self.rows:
            table.add_row(*row)
        (console or Console()).print(table)


def models_table(pattern: str = "*", with_flops: bool = True) -> TextTable:
    """The `zir models` table: name, parameters, GFLOPs at native resolution, image and patch size."""
    from zir.errors import UnknownNameError, ZirError
    from zir.models import count_flops, count_parameters, list_models, native_size

    names = list_models(pattern)
    if not names:
        raise UnknownNameError(f"no model matches {pattern!r}; `zir models` lists them all")
    table = TextTable(
        title=f"zir models matching {pattern!r}",
        columns=["name", "params", "GFLOPs", "input", "patch"],
        caption="Parameters with a 1000-class head where the model has one. GFLOPs: one image at the native "
                "resolution (text towers: one full context), FLOPs = 2 x multiply-adds, counted with "
                "torch.utils.flop_counter.FlopCounterMode.",
    )
    for name in names:
        size = native_size(name)
        flops = "-"
        if with_flops:
            try:
                flops = f"{count_flops(name) / 1e9:.2f}"
            except ZirError:
                pass  # a tower whose input the counter cannot make up (e.g. a pretrained text encoder)
        if size["img_size"] is not None:
            shown_input = _size(size["img_size"])
            patch = _size(size["patch_size"]) if size["patch_size"] is not None else "-"  # convolutional stems
        else:
            context = size["context_length"]
            shown_input, patch = (f"{context} tokens" if context else "text"), "-"
        table.rows.append([name, f"{count_parameters(name):,}", flops, shown_input, patch])
    return table


def recipes_table() -> TextTable:
    """The `zir recipes` table: each shipped recipe's name and the first line of its leading comment."""
    from zir.recipes import RECIPES_DIR, list_recipes, recipe_summary

    table = TextTable(title="zir recipes (zir train NAME)", columns=["name", "what it trains"], left=2,
                      caption=f"Shipped in {RECIPES_DIR}; copy one to edit it: "
                              "cp $(zir recipes --path NAME) my.yaml && zir train my.yaml")
    table.rows = [[name, recipe_summary(name)] for name in list_recipes()]
    return table


def _size(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)
