"""zir dedup on a folder with planted copies: exact copies by pixel hash, altered copies by SemDeDup, a
mismatched caption by its outlying similarity; a CSV and an HTML report, and no file deleted."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from zir.cli import main
from zir.config import load_config
from zir.data import ShapesSource
from zir.search.dedup import caption_outliers, exact_groups, near_groups
from zir.train import train


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup") / "run"
    train(load_config("clip", ["train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32",
                               "data.batch_size=32", "data.options.n=64"]), out, progress=False)
    return out


def test_near_groups_join_each_copy_to_the_earlier_item_it_copies():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    copies = base[[3, 7, 7]] + 0.01 * rng.standard_normal((3, 16)).astype(np.float32)
    vectors = np.concatenate([base, copies])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = near_groups(vectors, threshold=0.99, clusters=4)
    assert sorted(g.ids for g in groups) == [[3, 30], [7, 31, 32]]
    assert all(0.99 <= g.score <= 1.0 for g in groups)


def test_exact_groups_and_caption_outliers():
    assert [g.ids for g in exact_groups(["a", "b", "a", "c", "a"])] == [[0, 2, 4]]
    rng = np.random.default_rng(1)
    images = rng.standard_normal((50, 8)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    captions = images + 0.1 * rng.standard_normal((50, 8)).astype(np.float32)
    captions[17] = -images[17]  # the caption of some other picture
    captions[20] = np.nan  # no caption
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    flagged = caption_outliers(images, captions)
    assert flagged[0].kind == "caption" and flagged[0].ids == [17] and flagged[0].score < -0.9  # worst first
    assert len(flagged) <= 2 and all(g.ids != [20] for g in flagged)  # at most one of the noisy tail beside it


def test_zir_dedup_finds_the_planted_copies_and_deletes_nothing(clip_run, tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    source = ShapesSource("test", n=40, size=64)
    for i in range(40):
        Image.fromarray(source.get(i).image).save(folder / f"img{i:02d}.png")
    original = Image.open(folder / "img05.png")
    original.save(folder / "same05.bmp")  # other bytes, same pixels: an exact duplicate
    buf = io.BytesIO()
    Image.open(folder / "img11.png").save(buf, format="JPEG", quality=90)
    (folder / "jpeg11.jpg").write_bytes(buf.getvalue())  # re-encoded: a near-duplicate
    Image.open(folder / "img23.png").resize((48, 48), Image.BILINEAR).save(folder / "small23.png")
    files_before = sorted(p.name for p in folder.iterdir())
    assert main(["embed", str(clip_run), str(folder), "--out", str(tmp_path / "idx"), "--no-progress"]) == 0
    assert main(["dedup", str(tmp_path / "idx"), "--out", str(tmp_path / "dd"), "--threshold", "0.99"]) == 0
    out = capsys.readouterr().out
    assert "1 exact" in out and "nothing deleted" in out
    rows = list(csv.DictReader(open(tmp_path / "dd" / "duplicates.csv")))
    groups: dict[str, set] = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add((row["kind"], row["action"], row["key"]))
    as_sets = [{key for _, _, key in g} for g in groups.values()]
    assert {"img05.png", "same05.bmp"} in as_sets
    assert any({"img11.png", "jpeg11.jpg"} <= g for g in as_sets)
    assert any({"img23.png", "small23.png"} <= g for g in as_sets)
    assert ("exact", "drop", "same05.bmp") in next(g for g in groups.values() if ("exact", "keep", "img05.png") in g)
    report = (tmp_path / "dd" / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") == len(rows) and "same05.bmp" in report
    assert sorted(p.name for p in folder.iterdir()) == files_before


def test_dedup_of_a_missing_index_is_one_line(tmp_path, capsys):
    assert main(["dedup", str(tmp_path / "none"), "--out", str(tmp_path / "dd")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
