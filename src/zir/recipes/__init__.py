"""The recipes and caption tokenizers that ship inside the zir package, found by name.

An installed zir is whole: `zir train clip` reads `zir/recipes/clip.yaml` and a recipe's
`data.tokenizer: shapes` reads `zir/recipes/tokenizers/shapes.json`, from any folder. A path to an existing
file always wins over a shipped name, so a user's own recipe or tokenizer (`zir train my.yaml`,
`data.tokenizer=tok.json`) works as before. Nothing here imports or runs anything a file names.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from zir.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent
TOKENIZERS_DIR = RECIPES_DIR / "tokenizers"


def list_recipes() -> list[str]:
    """Names of the shipped recipes (`zir/recipes/NAME.yaml`), sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def list_tokenizers() -> list[str]:
    """Names of the shipped caption tokenizers (`zir/recipes/tokenizers/NAME.json`), sorted."""
    return sorted(p.stem for p in TOKENIZERS_DIR.glob("*.json"))


def _did_you_mean(value: str, names: list[str]) -> str:
    """' (did you mean X?)' for the closest shipped name, matching a stale `configs/X.yaml` too; else ''."""
    stem = Path(value).stem if value.endswith((".yaml", ".yml", ".json")) else Path(value).name
    stem = stem.removesuffix("_tokenizer")
    close = difflib.get_close_matches(stem, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def recipe_path(name: str | os.PathLike) -> Path:
    """The YAML file of a recipe: `name` itself when it is an existing file, else the shipped recipe NAME.

    Raises a one-line ConfigError listing the shipped names (with the closest one) when neither exists.
    """
    path = Path(name)
    if path.is_file():
        return path
    names = list_recipes()
    if str(name) in names:
        return RECIPES_DIR / f"{name}.yaml"
    raise ConfigError(f"recipe {name} does not exist: neither a file nor a shipped recipe "
                      f"({', '.join(names)}){_did_you_mean(str(name), names)}")


def tokenizer_path(value: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """The tokenizer a recipe's `data.tokenizer` names: an existing file or folder (relative to the working
    directory, then to `base`, e.g. a run folder), else the shipped tokenizer NAME; a one-line ConfigError else."""
    path = Path(value)
    tried = [path] if path.is_absolute() or base is None else [path, Path(base) / path]
    for candidate in tried:
        if candidate.is_file() or (candidate.is_dir() and (candidate / "tokenizer.json").is_file()):
            return candidate
    names = list_tokenizers()
    if str(value) in names:
        return TOKENIZERS_DIR / f"{value}.json"
    raise ConfigError(f"data.tokenizer={value}: no such file and not a shipped tokenizer "
                      f"({', '.join(names)}){_did_you_mean(str(value), names)}")


def recipe_summary(name: str) -> str:
    """The first sentence (up to its first `.` or `;`) of a shipped recipe's leading comment: what it trains
    and after whom, whole rather than cut at a line end."""
    lines = []
    for line in (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    for end in re.finditer(r"(?<! al)\.(\s|$)|;", text):  # "Radford et al. 2021" does not end the sentence
        head = text[:end.start()]
        if head.count("(") == head.count(")"):  # nor does a `;` inside parentheses
            return head
    return text
