"""Bad and hostile input: table paths outside the table's folder, damaged and odd tar shards, memory caps,
recipe options on path sources, and files that used to end in a traceback."""

import gzip
import io
import json
import logging
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zir.cli import main
from zir.data import open_source
from zir.data.limits import DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS
from zir.data.loader import make_loader
from zir.data.shards import ShardSource, read_shard
from zir.data.sources import BadSample, decode_image, fit_square
from zir.errors import ConfigError, ZirError

PLAN = {"global": 1, "pipeline": "none", "size": 8}


def png(size=(10, 8), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its pixel data is that of a 1x1 image)."""
    data = bytearray(png((1, 1)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind=tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def bad_reasons(items) -> dict:
    out: dict = {}
    for x in items:
        if isinstance(x, BadSample):
            out[x.reason] = out.get(x.reason, 0) + 1
    return out


# -- 1. caption-table paths stay inside the table's folder ---------------------------------------------


@pytest.mark.parametrize("where", ["../secret.png", "imgs/../../secret.png", "ABSOLUTE"])
def test_table_rows_outside_the_folder_are_refused_unless_allowed(tmp_path, where):
    secret = write(tmp_path / "secret.png", png(color=(1, 2, 3)))
    write(tmp_path / "set" / "imgs" / "a.png", png())
    path = str(secret) if where == "ABSOLUTE" else where
    table = tmp_path / "set" / "t.csv"
    table.write_text(f"image,caption\nimgs/a.png,fine\n{path},sneaky\n")
    with pytest.raises(ConfigError) as e:
        open_source(table)
    assert str(e.value) == (
        f"caption table {table}, line 3: image path {path!r} is outside the table's folder (absolute or ../); "
        "pass allow_outside=True (data.options.allow_outside: true) to read it"
    )
    allowed = open_source(table, allow_outside=True)
    assert len(allowed) == 2 and tuple(allowed.get(1).image[0, 0]) == (1, 2, 3)


def test_table_paths_that_stay_inside_are_fine(tmp_path):
    write(tmp_path / "imgs" / "a.png", png())
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "./imgs/../imgs/a.png", "caption": "ok"}) + "\n")
    assert open_source(tmp_path / "t.jsonl").get(0).captions == ["ok"]


def test_jsonl_rows_that_are_not_objects_are_counted(tmp_path):
    write(tmp_path / "a.png", png())
    rows = ['{"image": "a.png", "caption": "ok"}', "[1, 2]", '"just text"', "7", '{"caption": "no image"}']
    (tmp_path / "t.jsonl").write_text("\n".join(rows) + "\n")
    src = open_source(tmp_path / "t.jsonl")
    assert len(src) == 5
    loader = make_loader(src, PLAN, 8, drop_last=False, shuffle=False)
    assert [k for b in loader for k in b.keys] == ["a.png"]
    assert loader.report.skipped == {"row is not a JSON object": 3, "row names no image": 1}
    assert loader.report.examples["row is not a JSON object"] == ["t.jsonl:2", "t.jsonl:3", "t.jsonl:4"]


# -- 2. tar shards: damage, hard links, symlinks and devices ---------------------------------------------


def cls_shard(path: Path, n: int) -> Path:
    """n samples of one 1-byte `.cls` member each: 1,024 bytes per sample (header + data block)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            add(tar, f"k{i:02d}.cls", b"1")
    return path


@pytest.mark.parametrize("cut", [19 * 1024 + 100, 19 * 1024])  # inside the 20th header; exactly before it
def test_plain_tar_cut_inside_a_header_counts_one_error(tmp_path, cut):
    whole = cls_shard(tmp_path / "whole.tar", 29)
    assert len(list(read_shard(str(whole)))) == 29  # intact: no error
    cut_tar = write(tmp_path / "cut.tar", whole.read_bytes()[:cut])
    out = list(read_shard(str(cut_tar)))
    assert [r["__key__"] for r in out[:-1]] == [f"k{i:02d}" for i in range(19)]
    assert isinstance(out[-1], BadSample) and out[-1].reason == "damaged shard (ReadError)"


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("claimed", [50 * 2**30, 2**62])  # an octal size; a GNU base-256 one
def test_a_header_claiming_more_than_the_shard_holds_ends_it_after_a_few_reads(tmp_path, monkeypatch, claimed,
                                                                              compressed):
    # tarfile skips a refused member with one read per 10 KiB and never looks for the end: counted, not timed
    from zir.data import streams

    whole = cls_shard(tmp_path / "whole.tar", 2).read_bytes()[:2 * 1024]  # two samples, no end-of-archive blocks
    info = tarfile.TarInfo("big.png")
    info.size = claimed
    data = whole + info.tobuf(format=tarfile.GNU_FORMAT) + b"\x00" * 1024
    shard = write(tmp_path / ("a.tar.gz" if compressed else "a.tar"), gzip.compress(data) if compressed else data)
    reads = []
    real = streams.DecodedStream.readinto
    monkeypatch.setattr(streams.DecodedStream, "readinto", lambda self, b: reads.append(1) or real(self, b))
    out = list(read_shard(str(shard)))
    assert [r["__key__"] for r in out[:2]] == ["k00", "k01"]
    assert [r.reason for r in out[2:]] == ["member over 67,108,864 bytes", "damaged shard (ReadError)"]
    assert len(reads) < 200


def test_hard_linked_members_are_read(tmp_path):
    image = png(color=(5, 6, 7))
    shard = tmp_path / "links.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "a.png", image)
        add(tar, "a.cls", b"0")
        for i in range(70):  # enough members in between that the target is no longer held in memory
            add(tar, f"f{i:02d}.txt", b"filler")
        add(tar, "b.png", kind=tarfile.LNKTYPE, link="a.png")
        add(tar, "b.cls", b"1")
    for name, data in (("links.tar", shard.read_bytes()), ("links.tar.gz", gzip.compress(shard.read_bytes()))):
        got = {s.key.split(":")[1]: s for s in ShardSource(str(write(tmp_path / "x" / name, data)), has_captions=False)}
        assert tuple(got["b"].image[0, 0]) == (5, 6, 7) and got["b"].label == 1 and got["a"].label == 0


def test_hard_links_written_by_the_tar_binary(tmp_path):
    import os
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("no tar binary")
    a = write(tmp_path / "src" / "a.png", png(color=(9, 9, 9)))
    os.link(a, tmp_path / "src" / "b.png")  # the same file twice: tar stores the second as a hard link
    out = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", str(out), "-C", str(tmp_path / "src"), "a.png", "b.png"], check=True)
    with tarfile.open(out) as tar:
        assert [m.islnk() for m in tar.getmembers()] == [False, True]
    items = list(ShardSource(str(out), has_captions=False).stream())
    assert [(s.key, tuple(s.image[0, 0])) for s in items] == [("gnu.tar:a", (9, 9, 9)), ("gnu.tar:b", (9, 9, 9))]


def test_symlink_device_and_dangling_link_members_are_counted(tmp_path):
    shard = tmp_path / "odd.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "good.png", png())
        add(tar, "sym.png", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(tar, "dev.png", kind=tarfile.CHRTYPE)
        add(tar, "fifo.png", kind=tarfile.FIFOTYPE)
        add(tar, "dangling.png", kind=tarfile.LNKTYPE, link="nowhere.png")
        add(tar, "dir", kind=tarfile.DIRTYPE)
    items = list(ShardSource(str(shard), has_captions=False).stream())
    assert [s.key for s in items if not isinstance(s, BadSample)] == ["odd.tar:good"]
    assert bad_reasons(items) == {"symlink member": 1, "device or special member": 2, "hard link to a member not in the shard": 1}


def test_shard_json_labels_that_are_not_integers_are_counted(tmp_path):
    shard = tmp_path / "j.tar"
    with tarfile.open(shard, "w") as tar:
        for key, meta in (("a", {"label": [1, 2]}), ("b", {"label": {"x": 1}}), ("c", {"label": 2}), ("d", ["not", "a", "dict"])):
            add(tar, f"{key}.png", png())
            add(tar, f"{key}.json", json.dumps(meta).encode())
    items = list(ShardSource(str(shard)).stream())
    assert bad_reasons(items) == {"label is not an integer": 2}
    good = [s for s in items if not isinstance(s, BadSample)]
    assert [(s.key, s.label) for s in good] == [("j.tar:c", 2), ("j.tar:d", -1)]
    assert good[1].notes == [".json not an object, ignored"]


# -- 3. bounded memory -----------------------------------------------------------------------------------


def test_shard_member_over_the_cap_is_skipped_without_reading_it(tmp_path):
    assert DEFAULT_MAX_MEMBER_BYTES == 64 * 2**20
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar, "a.png", png())
        info = tarfile.TarInfo("big.png")
        info.size = DEFAULT_MAX_MEMBER_BYTES + 1
        tar.addfile(info, _Zeros(info.size))
        add(tar, "big.cls", b"1")
        add(tar, "c.png", png())
    shard = write(tmp_path / "bomb.tar.gz", gzip.compress(raw.getvalue(), 9))
    assert shard.stat().st_size < 200_000
    tracemalloc.start()
    try:
        items = list(ShardSource(str(shard), has_captions=False).stream())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s.key for s in items if not isinstance(s, BadSample)] == ["bomb.tar.gz:a", "bomb.tar.gz:c"]
    assert bad_reasons(items) == {"member over 67,108,864 bytes": 1}
    assert peak < 8 * 2**20
    small = list(ShardSource(str(shard), has_captions=False, max_member_bytes=50).stream())
    assert bad_reasons(small) == {"member over 50 bytes": 3}  # the PNGs are about 70 bytes


class _Zeros(io.RawIOBase):
    """A stream of `n` zero bytes that never holds them all."""

    def __init__(self, n):
        self.left = n

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def test_images_over_the_pixel_cap_are_refused_before_decoding():
    assert DEFAULT_MAX_PIXELS == 40_000_000
    claim = png_claiming(10_000, 5_000)  # 50 megapixels in 70 bytes
    with pytest.raises(BadSample) as e:
        decode_image(claim, "k")
    assert e.value.reason == "image over 40,000,000 pixels"
    with pytest.raises(BadSample, match="image over 79 pixels"):
        decode_image(png((10, 8)), "k", max_pixels=79)
    assert decode_image(png((10, 8)), "k", max_pixels=80).shape == (8, 10, 3)
    wide = png_claiming(200_000, 1)
    with pytest.raises(BadSample, match="image over 100,000 pixels"):
        decode_image(wide, "k", max_pixels=100_000)


def test_pixel_cap_is_an_option_of_every_path_source(tmp_path):
    write(tmp_path / "f" / "small.png", png((4, 4)))
    write(tmp_path / "f" / "large.png", png((40, 40)))
    loader = make_loader(open_source(tmp_path / "f", max_pixels=100), PLAN, 4, drop_last=False)
    assert [k for b in loader for k in b.keys] == ["small.png"] and loader.report.skipped == {"image over 100 pixels": 1}
    with pytest.raises(ConfigError, match=r"data.options.max_pixels=-1: expected a positive whole number or null"):
        open_source(tmp_path / "f", max_pixels=-1)


def test_extreme_aspect_ratio_resizes_only_the_square_it_keeps(monkeypatch):
    asked = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: asked.append(size) or resize(self, size, *a, **k))
    out = fit_square(np.zeros((1, 200_000, 3), np.uint8), 32)
    assert out.shape == (32, 32, 3) and asked == [(32, 32)]  # not (6_400_000, 32): 600 MB


def test_explain_refuses_a_huge_image_in_one_line(tmp_path):
    from zir.eval.explain import read_image

    path = write(tmp_path / "big.png", png_claiming(10_000, 5_000))
    with pytest.raises(ZirError) as e:
        read_image(path, (32, 32))
    assert str(e.value) == f"image {path} is 10000x5000 = 50,000,000 pixels, over the cap of 40,000,000"
    path = write(tmp_path / "bomb.png", png_claiming(100_000, 100_000))  # past PIL's own limit: refused on open
    with pytest.raises(ZirError, match=r"bomb.png: Image size \(10000000000 pixels\) exceeds limit") as e:
        read_image(path, (32, 32))
    assert "\n" not in str(e.value)


# -- 4. one line, never a traceback ----------------------------------------------------------------------


@pytest.fixture
def own_data(tmp_path):
    """A labelled image folder, a caption table and a shard folder of eight tiny images each."""
    colours = [(255, 0, 0), (0, 255, 0)] * 4
    for i, c in enumerate(colours):
        write(tmp_path / "folder" / ("red" if i % 2 == 0 else "green") / f"{i}.png", png((12, 12), c))
        write(tmp_path / "table" / "imgs" / f"{i}.png", png((12, 12), c))
    rows = "".join(f"imgs/{i}.png,a {'red' if i % 2 == 0 else 'green'} square\n" for i in range(8))
    (tmp_path / "table" / "captions.csv").write_text("image,caption\n" + rows)
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "s-0.tar", "w") as tar:
        for i, c in enumerate(colours):
            add(tar, f"{i}.png", png((12, 12), c))
            add(tar, f"{i}.txt", b"a red square" if i % 2 == 0 else b"a green square")
    return {"folder": tmp_path / "folder", "table": tmp_path / "table" / "captions.csv", "shards": tmp_path / "shards"}


@pytest.mark.parametrize("kind", ["folder", "table", "shards"])
def test_shipped_recipe_trains_on_your_own_data(own_data, kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the shipped recipe and its tokenizer are found from any folder
    run = tmp_path / "run"
    argv = ["train", "clip", f"data.source={own_data[kind]}", "train.steps=2", "data.batch_size=4",
            "--out", str(run), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "step 2/2" in capsys.readouterr().out


def test_size_is_an_option_of_every_source(own_data):
    for spec in own_data.values():
        src = open_source(spec, size=5)
        assert src.image_size == 5
        first = src.get(0) if hasattr(src, "get") else next(iter(src))
        assert first.image.shape == (5, 5, 3)


def test_options_of_another_source_are_dropped_with_a_warning(own_data, caplog):
    with caplog.at_level(logging.WARNING, logger="zir.data"):
        src = open_source(own_data["folder"], size=8, objects=[1, 1], label="shape")
    assert src.image_size == 8
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # one line however many options are dropped
    assert warnings[0].startswith("data.options objects, label (options of shapes) do not apply")
    assert f"do not apply to an image folder ({own_data['folder']}): ignored" in warnings[0]


def test_unknown_option_is_one_line_naming_the_key_and_the_accepted_ones(own_data, tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError) as e:
        open_source(own_data["table"], colour="red")
    assert str(e.value) == (
        f"data.options.colour: not an option of a caption table ({own_data['table']}); "
        "accepted: allow_outside, caption_column, image_column, max_pixels, size"
    )
    with pytest.raises(ConfigError) as e:
        open_source("shapes", colour="red")
    assert str(e.value) == ("data.options.colour: not an option of the shapes source; "
                            "accepted: cache_dir, label, n, object_scale, objects, seed, size")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "clip", f"data.source={own_data['folder']}", "data.options.colour=red",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zir: error: data.options.colour: not an option of an image folder") and err.count("\n") == 1


def test_csv_with_a_huge_field_or_a_byte_order_mark(tmp_path):
    write(tmp_path / "a.png", png())
    huge = "word " * 40_000  # 200,000 characters, over csv's default field limit of 131,072
    (tmp_path / "huge.csv").write_text(f'image,caption\na.png,"{huge}"\n')
    loader = make_loader(open_source(tmp_path / "huge.csv"), {**PLAN, "text": 1}, 1)
    (batch,) = list(loader)
    assert len(batch.captions["text_0"][0]) <= 1000 and loader.report.converted == {"over-long caption truncated": 1}
    (tmp_path / "bom.csv").write_bytes("image,caption\na.png,with a mark\n".encode("utf-8-sig"))
    src = open_source(tmp_path / "bom.csv")
    assert src.image_column == "image" and src.get(0).captions == ["with a mark"]
    (tmp_path / "bom.jsonl").write_bytes('{"image": "a.png", "caption": "json mark"}\n'.encode("utf-8-sig"))
    assert open_source(tmp_path / "bom.jsonl").get(0).captions == ["json mark"]
