"""Sources on small files the tests write: image folders, caption tables, tar shards, built-in names, bad data."""

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO
from zir.data import builtin, open_source, paths
from zir.data.loader import make_loader
from zir.data.shards import ShardSource, expand_braces, resolve_shards, split_key
from zir.data.sources import CAPTION_TEMPLATES, BadSample, CaptionTableSource, ImageFolderSource, decode_image
from zir.errors import ConfigError, UnknownNameError

SHARED = REPO.parent / "shared" / "data"


def png_bytes(color=(200, 30, 30), size=(10, 8), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    if mode == "RGB":
        img = Image.new("RGB", size, color)
    elif mode == "L":
        img = Image.new("L", size, 90)
    elif mode == "RGBA":
        img = Image.new("RGBA", size, (255, 0, 0, 0))  # fully transparent red
    elif mode == "P":
        img = Image.new("RGB", size, color).convert("P", palette=Image.ADAPTIVE, colors=4)
    elif mode == "I;16":
        img = Image.fromarray(np.full(size[::-1], 65535 // 2, dtype=np.uint16))
    img.save(buf, fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- decoding and conversions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,note,pixel",
    [
        ("RGB", None, (200, 30, 30)),
        ("L", "grayscale converted to RGB", (90, 90, 90)),
        ("RGBA", "alpha channel composited on grey", (128, 128, 128)),
        ("P", "palette image converted to RGB", (200, 30, 30)),
        ("I;16", "16-bit or float image scaled to 8-bit", (127, 127, 127)),  # 32767 / 65535
    ],
)
def test_decode_converts_every_mode_to_rgb(mode, note, pixel):
    notes = []
    img = decode_image(png_bytes(mode=mode), "k", notes)
    assert img.shape == (8, 10, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == pixel
    assert notes == ([note] if note else [])


def test_decode_rejects_bad_files(tmp_path):
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    cases = {
        "not an image": b"hello, I am text",
        "corrupt or truncated image": jpeg.getvalue()[:200],
    }
    for reason, data in cases.items():
        with pytest.raises(BadSample) as e:
            decode_image(data, "x")
        assert e.value.reason == reason
    with pytest.raises(BadSample, match="missing file"):
        decode_image(tmp_path / "nope.png", "nope.png")


# -- image folders ------------------------------------------------------------------------------------


def test_labelled_folder(tmp_path):
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            write(tmp_path / cls / f"{i}.png", png_bytes())
    write(tmp_path / "empty_class" / "notes.txt", b"no images here")
    src = open_source(tmp_path)
    assert isinstance(src, ImageFolderSource) and src.classes == ("cat", "dog")
    assert len(src) == 5 and src.labels().tolist() == [0, 0, 0, 1, 1]
    s = src.get(4)
    assert s.key == "dog/1.png" and s.label == 1 and s.image.shape == (8, 10, 3)


def test_unlabelled_folder_any_layout(tmp_path):
    write(tmp_path / "a.jpg", png_bytes(fmt="JPEG"))
    write(tmp_path / "2024" / "b.webp", png_bytes(fmt="WEBP"))
    write(tmp_path / "2024" / "deep" / "c.PNG", png_bytes())
    write(tmp_path / "README.md", b"# not an image")
    src = open_source(tmp_path)
    assert src.classes is None and len(src) == 3 and src.labels() is None
    assert [src.get(i).label for i in range(3)] == [-1, -1, -1]
    forced = open_source(f"unlabeled:{tmp_path / '2024'}")
    assert forced.classes is None and len(forced) == 2


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        ImageFolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files found"):
        open_source(f"folder:{tmp_path / 'empty'}")


# -- caption tables -----------------------------------------------------------------------------------


@pytest.fixture
def table_dir(tmp_path):
    d = tmp_path / "set"
    write(d / "imgs" / "one.png", png_bytes((10, 20, 30)))
    write(d / "imgs" / "two.png", png_bytes((40, 50, 60)))
    return d


def test_csv_table_groups_captions_and_resolves_paths(table_dir, tmp_path, monkeypatch):
    (table_dir / "captions.csv").write_text(
        'image,caption\nimgs/one.png,"a dark square, small"\nimgs/two.png,second image\nimgs/one.png,  another   caption \n'
    )
    monkeypatch.chdir(tmp_path)  # paths are relative to the table, not to the working folder
    src = open_source(table_dir / "captions.csv")
    assert isinstance(src, CaptionTableSource) and len(src) == 2 and src.has_captions
    s = src.get(0)
    assert s.key == "imgs/one.png" and s.captions == ["a dark square, small", "another caption"]
    assert tuple(s.image[0, 0]) == (10, 20, 30)


def test_tsv_and_jsonl_tables_with_named_columns(table_dir):
    (table_dir / "t.tsv").write_text("file\ttext\nimgs/two.png\ttwo things\n")
    src = open_source(table_dir / "t.tsv")
    assert src.image_column == "file" and src.get(0).captions == ["two things"]
    rows = [{"img_rel": "imgs/one.png", "sentences": ["first", "second"]}, {"img_rel": "imgs/two.png", "sentences": "third"}]
    (table_dir / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    src = CaptionTableSource(table_dir / "t.jsonl", image_column="img_rel", caption_column="sentences")
    assert [src.get(i).captions for i in range(2)] == [["first", "second"], ["third"]]


def test_table_errors(table_dir):
    (table_dir / "c.csv").write_text("image,caption\nimgs/one.png,hi\n")
    with pytest.raises(ConfigError, match=r"c.csv: no caption column 'title' \(columns: image, caption\)"):
        CaptionTableSource(table_dir / "c.csv", caption_column="title")
    (table_dir / "d.csv").write_text("picture,words\nimgs/one.png,hi\n")
    with pytest.raises(ConfigError, match="d.csv: no image column"):
        open_source(table_dir / "d.csv")
    (table_dir / "e.csv").write_text("image,caption\n")
    with pytest.raises(ConfigError, match="e.csv: no rows"):
        open_source(table_dir / "e.csv")
    (table_dir / "f.jsonl").write_text('{"image": "imgs/one.png", "caption": "ok"}\n{broken\n')
    with pytest.raises(ConfigError, match="f.jsonl, line 2: not JSON"):
        open_source(table_dir / "f.jsonl")


# -- shards -------------------------------------------------------------------------------------------


def make_shard(path: Path, samples: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for s in samples:
            for ext, data in s.items():
                if ext == "key":
                    continue
                info = tarfile.TarInfo(f"{s['key']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def labelled(keys, label=1):
    return [{"key": k, "jpg": png_bytes(fmt="JPEG"), "cls": str(label).encode()} for k in keys]


def test_brace_expansion():
    assert expand_braces("a-{000000..000003}.tar.gz") == [f"a-00000{i}.tar.gz" for i in range(4)]
    assert expand_braces("{train,val}-{1..2}.tar") == ["train-1.tar", "train-2.tar", "val-1.tar", "val-2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert split_key("dir/abc.seg.png") == ("dir/abc", "seg.png")


def test_shards_plain_and_gzip_with_captions_labels_json(tmp_path):
    make_shard(tmp_path / "s-000000.tar", labelled(["a", "b"]))
    caps = [{"key": "c", "png": png_bytes(), "txt": b"only caption"},
            {"key": "d", "webp": png_bytes(fmt="WEBP"), "txt": b"first", "json": json.dumps({"captions": ["one", "two"], "label": 3}).encode()}]
    make_shard(tmp_path / "s-000001.tar.gz", caps, gz=True)
    src = open_source(str(tmp_path / "s-00000{0,1}.tar*"))  # a brace list and a glob together
    got = list(src)
    assert [s.key.split(":")[1] for s in got] == ["a", "b", "c", "d"]
    assert [s.label for s in got] == [1, 1, -1, 3]
    assert got[2].captions == ["only caption"] and got[3].captions == ["one", "two"]
    assert all(s.image.shape == (8, 10, 3) for s in got)
    assert open_source(tmp_path).shards == src.shards  # a folder of shards


def test_shard_patterns_that_match_nothing_fail_at_once(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_shards(str(tmp_path / "x-{0..2}.tar"))
    with pytest.raises(ConfigError, match="matches no file"):
        open_source(str(tmp_path / "x-*.tar"))


def test_shards_split_across_ranks_and_workers_without_overlap(tmp_path):
    for i in range(4):
        make_shard(tmp_path / f"p-{i}.tar", labelled([f"{i}_{j}" for j in range(5)]))
    src = ShardSource(str(tmp_path / "p-{0..3}.tar"), classes=tuple("abcd"))
    everything = sorted(r["__key__"] for r in src.records())
    for n_slots in (2, 4, 8):  # 8 slots > 4 shards: the samples are shared out instead
        parts = [[r["__key__"] for r in src.records(slot, n_slots)] for slot in range(n_slots)]
        assert sorted(sum(parts, [])) == everything
        assert all(parts), n_slots


def test_shuffle_buffer_is_seeded(tmp_path):
    make_shard(tmp_path / "q.tar", labelled([f"k{j:02d}" for j in range(30)]))
    src = ShardSource(str(tmp_path / "q.tar"), shuffle_buffer=10)
    order = lambda **kw: [r["__key__"] for r in src.records(shuffle=True, **kw)]  # noqa: E731
    first = order(seed=0, epoch=0)
    assert first == order(seed=0, epoch=0)
    assert first != order(seed=0, epoch=1) and sorted(first) == sorted(order(seed=0, epoch=1))
    assert first != [f"k{j:02d}" for j in range(30)]


def test_damaged_shard_keeps_the_good_part_and_counts_one_error(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (20, 4096), dtype=np.uint8)  # does not compress
    good = make_shard(tmp_path / "g.tar", [{"key": f"x{j}", "bin": noise[j].tobytes(), "cls": b"1"} for j in range(20)])
    packed = gzip.compress(good.read_bytes())
    write(tmp_path / "bad.tar.gz", packed[: len(packed) // 2])
    out = list(ShardSource(str(tmp_path / "bad.tar.gz"), has_captions=False).records())
    bad = [x for x in out if isinstance(x, BadSample)]
    assert len(bad) == 1 and "damaged shard" in bad[0].reason and out[-1] is bad[0]
    assert 5 < len(out) - 1 < 20


# -- bad data through the loader ----------------------------------------------------------------------


@pytest.fixture
def messy_folder(tmp_path):
    d = tmp_path / "messy"
    write(d / "good1.png", png_bytes())
    write(d / "good2.jpg", png_bytes(fmt="JPEG"))
    write(d / "gray.png", png_bytes(mode="L"))
    write(d / "rgba.png", png_bytes(mode="RGBA"))
    write(d / "palette.png", png_bytes(mode="P"))
    write(d / "deep.png", png_bytes(mode="I;16"))
    write(d / "text.jpg", b"this is not a picture")
    write(d / "empty.png", b"")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    write(d / "truncated.jpg", jpeg.getvalue()[:300])
    return d


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_skipped_counted_and_named(messy_folder, workers):
    src = open_source(messy_folder)
    loader = make_loader(src, {"global": 1, "pipeline": "none", "size": 8, "patch_size": 4}, 4, workers=workers, drop_last=False)
    keys = sorted(k for b in loader for k in b.keys)
    assert keys == ["deep.png", "good1.png", "good2.jpg", "gray.png", "palette.png", "rgba.png"]
    rep = loader.report
    assert rep.skipped == {"not an image": 2, "corrupt or truncated image": 1}
    assert rep.converted == {
        "grayscale converted to RGB": 1,
        "alpha channel composited on grey": 1,
        "palette image converted to RGB": 1,
        "16-bit or float image scaled to 8-bit": 1,
    }
    assert sorted(rep.examples["not an image"]) == ["empty.png", "text.jpg"]
    assert rep.seen == 9 and "2 skipped (not an image" in rep.summary()


def test_bad_captions_and_missing_files_in_a_table(table_dir):
    long = "word " * 400
    (table_dir / "t.csv").write_text(
        f"image,caption\nimgs/one.png,fine\nimgs/one.png,\nimgs/two.png,   \nimgs/gone.png,lost\nimgs/two.png,{long}\n"
    )
    loader = make_loader(open_source(table_dir / "t.csv"), {"global": 1, "text": 1, "pipeline": "none", "size": 8}, 8, drop_last=False)
    (batch,) = list(loader)
    assert batch.keys == ["imgs/one.png", "imgs/two.png"]
    assert len(batch.captions["text_0"][1]) <= 1000 and batch.captions["text_0"][0] == "fine"
    assert loader.report.skipped == {"missing file": 1}
    assert loader.report.converted == {"empty caption dropped": 2, "over-long caption truncated": 1}


def test_all_bad_data_fails_with_one_clear_error(tmp_path):
    write(tmp_path / "a.png", b"junk")
    write(tmp_path / "b.png", b"more junk")
    loader = make_loader(open_source(tmp_path), {"global": 1, "size": 8}, 2)
    with pytest.raises(ConfigError, match=r"no usable batch in an epoch \(2 skipped \(not an image"):
        list(loader)


def test_too_few_samples_for_one_batch_says_so(tmp_path):
    write(tmp_path / "a.png", png_bytes())
    write(tmp_path / "b.png", png_bytes())
    with pytest.raises(ConfigError, match="fewer samples than one batch of 4 with drop_last"):
        list(make_loader(open_source(tmp_path), {"global": 1, "size": 8}, 4))
    assert len(list(make_loader(open_source(tmp_path), {"global": 1, "size": 8}, 4, drop_last=False))) == 1


def test_text_needs_captions_or_class_names(tmp_path):
    write(tmp_path / "cat" / "a.png", png_bytes())
    write(tmp_path / "dog" / "b.png", png_bytes())
    (batch,) = list(make_loader(open_source(tmp_path), {"global": 1, "text": 1, "size": 8}, 2, shuffle=False))
    assert batch.captions["text_0"][0] in [t.format(a="a", c="cat") for t in CAPTION_TEMPLATES if "{c}" in t] + [
        "a small photo of the cat."
    ]
    with pytest.raises(ConfigError, match="neither captions nor class names"):
        make_loader(open_source(f"unlabeled:{tmp_path}"), {"global": 1, "text": 1, "size": 8}, 2)


# -- built-in names -----------------------------------------------------------------------------------


def test_builtin_names_and_errors(tmp_path, monkeypatch):
    src = open_source("shapes:val", n=12, cache_dir=tmp_path)
    assert len(src) == 12 and src.classes[0] == "circle" and len(src.get(0).captions) == 5
    assert open_source("shapes", split="comp", n=3, label="count", cache_dir=tmp_path).classes == ("one", "two", "three")
    with pytest.raises(UnknownNameError, match="shapes has no split 'dev'"):
        open_source("shapes:dev")
    with pytest.raises(UnknownNameError, match="not a built-in name .* nor an existing path"):
        open_source("imagenet")
    with pytest.raises(ConfigError, match=r"cifar10: no folder .*cifar10"):
        open_source("cifar10", data_root=tmp_path)
    monkeypatch.delenv("ZIR_DATA", raising=False)
    monkeypatch.setattr(paths, "default_data_roots", lambda: [tmp_path / "nowhere"])
    with pytest.raises(ConfigError, match="put its shards .* pass --data-root DIR or set ZIR_DATA"):
        open_source("flickr8k:test")
    monkeypatch.setenv("ZIR_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="ZIR_DATA="):
        open_source("cifar10")


def test_digits_are_real_stratified_and_captioned():
    parts = {s: open_source(f"digits:{s}") for s in ("train", "val", "test")}
    sizes = {s: len(p) for s, p in parts.items()}
    assert sum(sizes.values()) == 1797 and sizes["train"] > sizes["val"] > 200
    keys = [set(p.keys) for p in parts.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2])
    for p in parts.values():
        counts = np.bincount(p.labels(), minlength=10) / len(p)
        assert np.abs(counts - 0.1).max() < 0.02  # every class in the same proportion
    s = parts["test"].get(0)
    assert s.image.shape == (32, 32, 3) and s.image.max() > 200
    assert s.captions[1] == f"the number {s.label}."


def test_fashion_mnist_reads_idx_files(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    write(tmp_path / "t10k-images-idx3-ubyte.gz", gzip.compress(header + imgs.tobytes()))
    write(tmp_path / "t10k-labels-idx1-ubyte", bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([7, 9]))
    src = builtin.fashion_mnist("test", root=tmp_path)
    assert len(src) == 2 and src.labels().tolist() == [7, 9] and src.classes[9] == "ankle boot"
    assert np.array_equal(src.get(1).image[..., 0], imgs[1])
    with pytest.raises(ConfigError, match="apt-get install -y dataset-fashion-mnist"):
        builtin.fashion_mnist("train", root=tmp_path)


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="needs ../shared/data")
def test_real_cifar10_and_flickr8k_shards():
    cifar = open_source("cifar10:test", data_root=SHARED)
    first = next(iter(cifar))
    assert first.image.shape == (32, 32, 3) and 0 <= first.label < 10 and cifar.classes[0] == "airplane"
    flickr = open_source("flickr8k:val", data_root=SHARED)
    s = next(iter(flickr))
    assert s.image.shape == (112, 112, 3) and len(s.captions) == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_loader_reads_every_sample_once_per_epoch(tmp_path, workers):
    for i in range(3):
        make_shard(tmp_path / f"w-{i}.tar", labelled([f"{i}_{j}" for j in range(6)], label=i))
    make_shard(tmp_path / "w-3.tar", [{"key": "broken", "jpg": b"garbage", "cls": b"0"}])
    src = ShardSource(str(tmp_path / "w-{0..3}.tar"), classes=("a", "b", "c"), shuffle_buffer=4)
    loader = make_loader(src, {"global": 1, "size": 8, "patch_size": 4}, 4, workers=workers, drop_last=False)
    keys = [k for b in loader for k in b.keys]
    assert sorted(k.split(":")[1] for k in keys) == sorted(f"{i}_{j}" for i in range(3) for j in range(6))
    assert loader.report.skipped == {"not an image": 1}
    labels = {k.split(":")[1]: int(l) for b in loader for k, l in zip(b.keys, b.labels)}
    assert labels["2_5"] == 2


def test_a_shard_stream_has_no_epoch_order_and_cannot_start_mid_epoch(tmp_path):
    make_shard(tmp_path / "w-0.tar", labelled(["a", "b", "c", "d"], label=0))
    loader = make_loader(ShardSource(str(tmp_path / "w-0.tar"), classes=("a",)), {"global": 1, "size": 8, "patch_size": 4}, 2)
    with pytest.raises(ValueError, match="stream source has no sample order"):
        loader.epoch_order()
    with pytest.raises(ValueError, match="start=2: expected 0, or a sample count for a map-style source"):
        loader.set_epoch(1, start=2)
    loader.set_epoch(1)
    assert loader.epoch == 1 and len([k for b in loader for k in b.keys]) == 4


@pytest.mark.skipif(not builtin.FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package():
    src = open_source("fashion_mnist:test")
    assert len(src) == 10_000 and src.image_size == 28
    assert np.bincount(src.labels()).tolist() == [1000] * 10
    assert src.classes[src.get(0).label] == "ankle boot"


def test_iter_captions_reads_text_without_images(tmp_path, table_dir):
    (table_dir / "c.csv").write_text("image,caption\nimgs/one.png,first\nimgs/missing.png,second\nimgs/one.png,\n")
    assert list(open_source(table_dir / "c.csv").iter_captions()) == ["first", "second"]
    make_shard(tmp_path / "cap.tar", [{"key": "a", "jpg": b"not decoded", "json": json.dumps({"captions": ["x", "y"]}).encode()},
                                      {"key": "b", "jpg": b"", "txt": b"z"}])
    assert list(ShardSource(str(tmp_path / "cap.tar")).iter_captions()) == ["x", "y", "z"]
    write(tmp_path / "lab" / "red_panda" / "1.png", png_bytes())
    assert "a photo of a red panda." in list(open_source(tmp_path / "lab").iter_captions())
    shapes = open_source("shapes:val", n=4, cache_dir=tmp_path)
    assert list(shapes.iter_captions(limit=2)) == shapes.data.captions[0] + shapes.data.captions[1]
