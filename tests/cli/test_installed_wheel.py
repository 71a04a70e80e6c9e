"""An installed zir is whole: the built wheel, in a fresh venv, trains a shipped recipe and runs the demo from a
folder with no checkout in sight (the recipes and tokenizers travel inside the package).

No network: the wheel is built without build isolation, the venv has no pip of its own, and the dependencies
(torch, numpy, ...) come from this environment's site-packages through a .pth file. The venv's own
site-packages comes first on sys.path, so `import zir` finds the wheel's copy, never the checkout's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import REPO


def _run(argv: list, cwd: Path, env: dict, timeout: int = 120) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources, so the checkout gets no build/ or egg-info folder."""
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-w", tmp / "dist", tree], tmp, dict(os.environ))
    (wheel,) = (tmp / "dist").glob("zir-*.whl")
    return wheel


def _venv(tmp: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel's zir, with this environment's packages behind it."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, dict(os.environ))
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, dict(os.environ))
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site.strip(), "_zir_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel], tmp, dict(os.environ))
    return venv


@pytest.mark.long(seconds=48)
def test_the_built_wheel_trains_a_shipped_recipe_and_runs_the_demo_from_any_folder(tmp_path):
    wheel = _wheel(tmp_path)
    venv = _venv(tmp_path, wheel)
    work = tmp_path / "elsewhere"  # no configs/, no checkout: what a user who ran `pip install zir` has
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZIR_DATA")}
    env["OMP_NUM_THREADS"] = "1"

    where = _run([venv / "bin" / "python", "-c", "import zir; print(zir.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's zir, not the checkout's
    zir = venv / "bin" / "zir"

    listing = _run([zir, "recipes"], work, env)
    for name in ("clip", "mae", "unified", "finetune"):
        assert f" {name} " in listing, listing
    shipped = Path(_run([zir, "recipes", "--path", "clip"], work, env).strip())
    assert shipped.is_relative_to(venv) and shipped.name == "clip.yaml"

    _run([zir, "train", "clip", "train.steps=2", "data.options.n=64", "data.batch_size=8", "train.threads=1",
          "--out", "run", "--no-progress"], work, env)
    assert (work / "run" / "tokenizer.json").read_bytes() == (REPO / "src/zir/recipes/tokenizers/shapes.json").read_bytes()
    assert list((work / "run" / "checkpoints").iterdir())

    out = _run([zir, "demo", "--steps", "2", "--out", "demo"], work, env, timeout=300)
    assert "random init" in out and f"Results: demo{os.sep}results.json" in out, out[-2000:]
    assert all((work / "demo" / name).is_file() for name in ("tokenizer.json", "results.json", "report.html"))
