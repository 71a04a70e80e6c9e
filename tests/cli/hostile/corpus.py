"""Builders of hostile and broken inputs: images, caption tables, shards, recipes, run folders and exports.

Every builder is a function `build(root, kit)` that writes one bad input (and whatever good files it needs
beside it) under `root`, the folder a command then runs in. `kit` holds what is costly to make and shared:
a tiny trained run to copy and damage. Nothing here runs zir's commands; tests/cli/test_hostile_inputs.py pairs
each builder with a command and what must happen.

The payload module (`PAYLOAD_MODULE`) touches `PAYLOAD_MARKER` in the working folder when imported: a
recipe, run folder or export that names it must never get it imported.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image

PAYLOAD_MODULE = "zir_hostile_payload"
PAYLOAD_MARKER = "PAYLOAD_RAN"
PAYLOAD_FACTORY = f"{PAYLOAD_MODULE}:build"

# A recipe that trains in about a second on one core: MAE on 8 shapes at 32x32 with the smallest ViT.
TINY_RECIPE = {
    "name": "tiny",
    "model": {
        "towers": {"image": {"model": "vit_nano_patch4_32"}},
        "objectives": {"mae": {"weight": 1.0, "mask_ratio": 0.75, "decoder_depth": 1, "decoder_heads": 2}},
    },
    "data": {"source": "shapes", "batch_size": 4, "options": {"size": 32, "n": 8}},
    "train": {"steps": 1, "ckpt_every": 0},
}

Builder = Callable[[Path, "Kit"], None]


class Kit:
    """Shared, costly inputs: one tiny trained run (trained once by `train_base`), copied per test."""

    def __init__(self, base_run: Path):
        self.base_run = base_run

    @staticmethod
    def train_base(folder: Path) -> Path:
        """Train TINY_RECIPE for one step into `folder`/run and export it; returns the run folder."""
        from zir.config import from_dict
        from zir.train import train
        from zir.train.runs import export_run

        run = folder / "run"
        train(from_dict(copy.deepcopy(TINY_RECIPE)), run, progress=False)
        export_run(run)
        return run

    def copy_run(self, root: Path, name: str = "run") -> Path:
        """A fresh copy of the trained run (config, checkpoint, export) at root/name."""
        return Path(shutil.copytree(self.base_run, root / name))


# -- images -------------------------------------------------------------------------------------------

def png_bytes(w: int = 16, h: int = 16, seed: int = 0, mode: str = "RGB") -> bytes:
    """A noisy PNG (noise so that it does not compress to a few bytes and a cut lands inside the pixels)."""
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(w: int = 32, h: int = 32, seed: int = 0) -> bytes:
    """A noisy baseline JPEG."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_header_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A 60-byte PNG whose header claims w x h pixels (10 gigapixels by default): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def wide_png(w: int = 200_000, h: int = 1) -> bytes:
    """A valid grey PNG of w x h pixels: few pixels, an absurd aspect ratio."""
    return png_bytes(w, h, mode="L")


TRUNCATED_JPEG = lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2]  # noqa: E731
TRUNCATED_PNG = lambda: png_bytes(32, 32)[: len(png_bytes(32, 32)) // 2]  # noqa: E731
TEXT_AS_IMAGE = b"this is a text file that someone named picture.jpg\n"


def write(root: Path, rel: str, data: bytes | str) -> Path:
    """Write bytes or text at root/rel, making its folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def image_folder(bad: dict[str, Callable[[], bytes] | bytes], good: int = 2, folder: str = "imgs") -> Builder:
    """A folder of `good` good PNGs plus the `bad` files (name -> bytes or a function making them)."""

    def build(root: Path, kit: Kit) -> None:
        for i in range(good):
            write(root, f"{folder}/good_{i}.png", png_bytes(seed=i))
        for name, data in bad.items():
            write(root, f"{folder}/{name}", data() if callable(data) else data)

    return build


def image_file(name: str, data: Callable[[], bytes] | bytes, with_run: bool = False) -> Builder:
    """One image file at root/name (and the trained run at root/run when `with_run`)."""

    def build(root: Path, kit: Kit) -> None:
        write(root, name, data() if callable(data) else data)
        if with_run:
            kit.copy_run(root)

    return build


# -- caption tables -----------------------------------------------------------------------------------

def caption_table(name: str, content: Callable[[Path], bytes | str] | bytes | str, images: int = 2) -> Builder:
    """A caption table at root/tab/NAME next to `images` good PNGs tab/ok_0.png...; `content` may take root."""

    def build(root: Path, kit: Kit) -> None:
        for i in range(images):
            write(root, f"tab/ok_{i}.png", png_bytes(seed=i))
        write(root, f"tab/{name}", content(root) if callable(content) else content)

    return build


def csv_text(rows: list[tuple[str, str]], header: str = "image,caption") -> str:
    """A CSV table; fields are quoted so commas and quotes in captions survive."""
    out = io.StringIO()
    out.write(header + "\n")
    for image, caption in rows:
        out.write(f'"{image}","{caption}"\n')
    return out.getvalue()


GOOD_ROWS = [("ok_0.png", "a red box"), ("ok_1.png", "a blue disk")]


def escaping_rows(root: Path) -> str:
    """Good rows plus one `../` row and one absolute-path row, both naming a real image outside tab/."""
    outside = write(root, "outside.png", png_bytes(seed=9))
    return csv_text(GOOD_ROWS + [("../outside.png", "a secret"), (str(outside), "another secret")])


# -- shards -------------------------------------------------------------------------------------------

def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    return info, io.BytesIO(data)


def tar_bytes(members: list, gz: bool = False) -> bytes:
    """A tar (gzip when `gz`) of (name, bytes) members; a TarInfo item is added as it is (links, devices)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                tar.addfile(*_member(*m))
    return buf.getvalue()


def open_tar(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of the members without its end-of-archive blocks, so what is appended is read as the next header."""
    end = sum(512 * (1 + -(-len(d) // 512)) for _, d in members)
    return tar_bytes(members)[:end]


def sample(key: str, seed: int = 0, **parts: bytes | str) -> list[tuple[str, bytes]]:
    """The members of one shard sample: KEY.png plus KEY.<ext> for each part (cls, txt, json, ...)."""
    out = [(f"{key}.png", png_bytes(seed=seed))]
    out += [(f"{key}.{ext}", v if isinstance(v, bytes) else v.encode()) for ext, v in parts.items()]
    return out


def good_samples(n: int = 3, start: int = 0) -> list[tuple[str, bytes]]:
    """n labelled, captioned samples s0, s1, ..."""
    return [m for i in range(start, start + n) for m in sample(f"s{i}", seed=i, cls=str(i % 2), txt=f"shape number {i}")]


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    """A hard link (LNKTYPE) or symbolic link (SYMTYPE) member."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, target, 0
    return info


def oversize_header(name: str, size: int) -> bytes:
    """A tar header block claiming a member of `size` bytes, followed by 1 KiB of its data and nothing more."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, 0
    return info.tobuf(format=tarfile.GNU_FORMAT) + b"\x00" * 1024


def shard(name: str, members: list | Callable[[], bytes], gz: bool = False, cut: int | None = None) -> Builder:
    """A shard at root/shards/NAME from members (or raw bytes); `cut` keeps only that many leading bytes."""

    def build(root: Path, kit: Kit) -> None:
        data = members() if callable(members) else tar_bytes(members, gz=gz)
        write(root, f"shards/{name}", data[:cut] if cut is not None else data)

    return build


def cut_after_members(n_full: int, gz: bool = False) -> Callable[[], bytes]:
    """Three samples' members, the archive cut 100 bytes into the first member after `n_full` members.

    For gzip, everything before the cut is compressed and flushed first, so it all decompresses and the
    damage starts exactly at the cut, as in the plain tar.
    """

    def make() -> bytes:
        members = good_samples(3)
        whole = tar_bytes(members)
        keep = 512 * sum(1 + -(-len(d) // 512) for _, d in members[:n_full]) + 512 + 100  # header + 100 bytes
        if not gz:
            return whole[:keep]
        z = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing
        head = z.compress(whole[:keep]) + z.flush(zlib.Z_FULL_FLUSH)
        return head + z.compress(whole[keep:])[:64]

    return make


def oversize_member_shard() -> bytes:
    """Two good samples and a 65 MiB member of zeros (just over the default 64 MiB cap), gzip: 64 KiB on disk."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for m in good_samples(2):
            tar.addfile(*_member(*m))
        info = tarfile.TarInfo("s9.png")
        info.size, info.mtime = 65 * 2**20, 0
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return buf.getvalue()


# -- recipes, run folders, exports --------------------------------------------------------------------

def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value


def recipe(file: str = "r.yaml", text: str | bytes | None = None, **changes) -> Builder:
    """TINY_RECIPE with dotted changes (`model__factory="os:system"`; a callable value gets root), or raw `text`,
    at root/FILE."""

    def build(root: Path, kit: Kit) -> None:
        if text is not None:
            write(root, file, text)
            return
        raw = copy.deepcopy(TINY_RECIPE)
        for key, value in changes.items():
            _set(raw, key.replace("__", "."), value(root) if callable(value) else value)
        write(root, file, yaml.safe_dump(raw, sort_keys=False))

    return build


def with_files(*builders: Builder) -> Builder:
    """Several builders as one."""

    def build(root: Path, kit: Kit) -> None:
        for b in builders:
            b(root, kit)

    return build


def payload(root: Path, kit: Kit) -> None:
    """The payload module, in the working folder (importable the way `python -m zir` finds cwd modules)."""
    write(root, f"{PAYLOAD_MODULE}.py",
          "from pathlib import Path\n"
          f"Path({PAYLOAD_MARKER!r}).write_text('imported')\n"
          "def build(section):\n"
          f"    Path({PAYLOAD_MARKER!r}).write_text('called')\n"
          "    raise SystemExit('payload ran')\n")


def damaged_run(**edits: Callable[[Path], None]) -> Builder:
    """The trained run at root/run, then each edit(run) applied (they damage files inside it)."""

    def build(root: Path, kit: Kit) -> None:
        run = kit.copy_run(root)
        for edit in edits.values():
            edit(run)

    return build


def newest_checkpoint(run: Path) -> Path:
    """The newest step_* folder of a run."""
    return sorted((run / "checkpoints").glob("step_*"))[-1]


def set_config(text: str | Callable[[dict], dict]) -> Callable[[Path], None]:
    """An edit replacing the run's config.yaml with raw text, or with fn(parsed config)."""

    def edit(run: Path) -> None:
        path = run / "config.yaml"
        if callable(text):
            path.write_text(yaml.safe_dump(text(yaml.safe_load(path.read_text())), sort_keys=False))
        else:
            path.write_text(text)

    return edit


def model_change(**changes) -> Callable[[dict], dict]:
    """fn(config) -> config with dotted changes under `model`."""

    def fn(cfg: dict) -> dict:
        for key, value in changes.items():
            _set(cfg["model"], key.replace("__", "."), value)
        return cfg

    return fn


def cut_file(rel: str, keep: int) -> Callable[[Path], None]:
    """An edit keeping only the first `keep` bytes of run/REL (REL may start with CKPT/ for the newest checkpoint)."""

    def edit(run: Path) -> None:
        path = _resolve(run, rel)
        path.write_bytes(path.read_bytes()[:keep])

    return edit


def replace_file(rel: str, data: bytes | str) -> Callable[[Path], None]:
    """An edit overwriting run/REL with `data`."""

    def edit(run: Path) -> None:
        _resolve(run, rel).write_bytes(data if isinstance(data, bytes) else data.encode())

    return edit


def remove(rel: str) -> Callable[[Path], None]:
    """An edit deleting run/REL (a file or folder)."""

    def edit(run: Path) -> None:
        path = _resolve(run, rel)
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return edit


def trainer_state(state: dict) -> Callable[[Path], None]:
    """An edit replacing the newest checkpoint's trainer.pt with `state` (plain values, loadable weights_only)."""

    def edit(run: Path) -> None:
        import torch

        torch.save(state, newest_checkpoint(run) / "trainer.pt")

    return edit


def newer_copy(run: Path) -> None:
    """An edit copying the newest checkpoint as the next step's, so a damaged newest one has an older fallback."""
    old = newest_checkpoint(run)
    shutil.copytree(old, old.with_name(f"step_{int(old.name[5:]) + 1:08d}"))


def _resolve(run: Path, rel: str) -> Path:
    if rel.startswith("CKPT/"):
        return newest_checkpoint(run) / rel[5:]
    return run / rel


def export_folder(metadata: Callable[[dict], dict | None] | None = lambda meta: meta, weights: str = "same") -> Builder:
    """An export-only folder root/exp (config.yaml + model.safetensors, as `zir eval` reads one) made from the
    trained run's export with its metadata passed through `metadata` (None: no metadata at all) and its weights
    `same`, `garbage` (random bytes) or `misfit` (every tensor one row short)."""

    def build(root: Path, kit: Kit) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        src = kit.base_run / "export"
        out = root / "exp"
        out.mkdir(parents=True)
        shutil.copy(src / "config.yaml", out / "config.yaml")
        if weights == "garbage":
            write(out, "model.safetensors", np.random.default_rng(0).bytes(4096))
            return
        with safe_open(str(src / "model.safetensors"), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        if weights == "misfit":
            state = {k: (v[:-1].clone() if v.ndim and v.shape[0] > 1 else v) for k, v in state.items()}
        new_meta = metadata(dict(meta)) if metadata is not None else None
        save_file(state, str(out / "model.safetensors"), metadata=new_meta)

    return build


def meta_model(value: str) -> Callable[[dict], dict]:
    """fn(metadata) -> metadata with zir_model set to the raw string `value`."""
    return lambda meta: {**meta, "zir_model": value}


def meta_set(**changes: str) -> Callable[[dict], dict]:
    """fn(metadata) -> metadata with the given string fields replaced."""
    return lambda meta: {**meta, **changes}


def runs_root(status: dict | list | str) -> Builder:
    """A folder root/runs_root holding the trained run with its status.json replaced by `status`."""

    def build(root: Path, kit: Kit) -> None:
        run = kit.copy_run(root / "runs_root")
        text = status if isinstance(status, str) else json.dumps(status)
        (run / "status.json").write_text(text)

    return build
