"""Where zir keeps generated data (the cache), where it looks for real data (the data root), and stable seeds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zir.errors import ConfigError

# The repository root when zir runs from a checkout (src/zir/data/paths.py -> three levels up).
_REPO_ROOT = Path(__file__).resolve().parents[3]


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder for generated datasets: `override`, else $ZIR_CACHE, else ~/.cache/zir."""
    if override is not None:
        root = Path(override)
    elif os.environ.get("ZIR_CACHE"):
        root = Path(os.environ["ZIR_CACHE"])
    else:
        root = Path.home() / ".cache" / "zir"
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_data_roots() -> list[Path]:
    """The places searched for real datasets when neither --data-root nor $ZIR_DATA is given."""
    return [Path.cwd().parent / "shared" / "data", _REPO_ROOT.parent / "shared" / "data"]


def data_root(override: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """The folder holding real datasets: `override` (--data-root), else $ZIR_DATA, else ../shared/data if present."""
    if override is not None:
        root = Path(override)
        if not root.is_dir():
            raise ConfigError(f"--data-root {root}: no such folder")
        return root
    env = os.environ.get("ZIR_DATA")
    if env:
        root = Path(env)
        if not root.is_dir():
            raise ConfigError(f"ZIR_DATA={env}: no such folder")
        return root
    for root in default_data_roots():
        if root.is_dir():
            return root
    if required:
        raise ConfigError(
            "no data root: pass --data-root DIR or set ZIR_DATA=DIR (default ../shared/data when it exists)"
        )
    return None


def files_with_suffix(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files below `folder` (at any depth) whose suffix is one of `suffixes`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def class_folders(root: Path, suffixes: tuple[str, ...], labeled: bool | None, what: str):
    """`(files, labels, classes)` of a folder: labelled by class sub-folder (`root/CLASS/...`), or unlabelled
    (labels -1, classes None). `labeled=None` decides: sub-folders and no such files at the top mean classes.
    One scan for every media folder source (images, audio), so they agree on what a class folder is."""
    if not root.is_dir():
        raise ConfigError(f"{what} folder {root}: no such folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    top = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    if labeled is None:
        labeled = bool(subdirs) and not top
    files: list[Path] = []
    labels: list[int] = []
    classes = None
    if labeled:
        classes = []
        for d in subdirs:
            found = files_with_suffix(d, suffixes)
            if found:
                classes.append(d.name)
                files += found
                labels += [len(classes) - 1] * len(found)
        classes = tuple(classes)
    else:
        files = files_with_suffix(root, suffixes)
        labels = [-1] * len(files)
    if not files:
        raise ConfigError(f"{what} folder {root}: no {what} files found (looked for {', '.join(suffixes)})")
    return files, labels, classes


def hash_seed(*parts) -> int:
    """A stable 63-bit integer from any printable parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
