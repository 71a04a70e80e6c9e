"""zir embed and zir search on a tiny CLIP run: stored items, resuming without duplicates, self-retrieval, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zir.cli import main
from zir.config import load_config
from zir.data import ShapesSource
from zir.errors import ConfigError
from zir.search.embed import embed_source
from zir.search.encoders import RunEncoder
from zir.search.query import Searcher
from zir.search.store import ItemStore
from zir.train import train


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A CLIP run of the shipped recipe after 2 steps of batch 32 (seconds): weights differ per image."""
    out = tmp_path_factory.mktemp("search") / "run"
    train(load_config("clip", ["train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32",
                               "data.batch_size=32", "data.options.n=64"]), out, progress=False)
    return out


def shapes(n=40):
    return ShapesSource("test", n=n, size=16, objects=(1, 1), object_scale=2.5)


def test_embed_stores_every_item_with_key_caption_and_unit_vectors(clip_run, tmp_path):
    info = embed_source(clip_run, shapes(), tmp_path / "idx", batch_size=16, progress=False)
    assert info["items"] == 40 and info["skipped"] == 0 and info["kind"] == "exact" and info["space"] == "joint"
    store = ItemStore(tmp_path / "idx")
    items = store.items()
    assert [it.key for it in items] == [f"shapes/test/{i:06d}" for i in range(40)]
    assert all(it.caption for it in items)
    vectors, captions = store.vectors(), store.vectors("caption_vec")
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(captions, axis=1), 1.0, atol=1e-5)


def test_an_interrupted_embed_resumes_where_it_stopped_without_duplicates(clip_run, tmp_path, monkeypatch):
    whole = embed_source(clip_run, shapes(), tmp_path / "whole", batch_size=8, progress=False)
    encoder = RunEncoder(clip_run)
    calls = {"n": 0}
    real = encoder.images_and_features

    def dies_on_the_third_batch(pixels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(pixels)

    monkeypatch.setattr(encoder, "images_and_features", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        embed_source(clip_run, shapes(), tmp_path / "idx", batch_size=8, progress=False, encoder=encoder)
    assert ItemStore(tmp_path / "idx").count() == 16  # two whole batches committed, the third not at all
    monkeypatch.undo()
    info = embed_source(clip_run, shapes(), tmp_path / "idx", batch_size=8, progress=False)
    assert info["resumed_at"] == 16 and info["items"] == whole["items"] == 40
    store = ItemStore(tmp_path / "idx")
    assert store.positions() == list(range(40))
    np.testing.assert_allclose(store.vectors(), ItemStore(tmp_path / "whole").vectors(), atol=1e-6)


def test_an_index_of_another_source_is_not_resumed_into(clip_run, tmp_path):
    embed_source(clip_run, shapes(), tmp_path / "idx", progress=False)
    with pytest.raises(ConfigError, match="holds an embed of source"):
        embed_source(clip_run, "shapes:val", tmp_path / "idx", progress=False)


def test_every_image_query_finds_itself_first(clip_run, tmp_path):
    embed_source(clip_run, shapes(), tmp_path / "idx", progress=False)
    searcher = Searcher(tmp_path / "idx")
    assert all(searcher.similar(i, 3)[0].item.id == i for i in range(40))
    hits = searcher.text("a red circle", 5)
    assert len(hits) == 5 and all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_zir_search_image_file_prints_the_file_itself_first(clip_run, tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    source = shapes(12)
    for i in range(12):
        Image.fromarray(source.get(i).image).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["embed", str(clip_run), str(folder), "--out", str(tmp_path / "idx"), "--no-progress"]) == 0
    assert "12 items (1 skipped)" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "idx"), "--image", str(folder / "img07.png"), "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1" and lines[0].split()[2] == str((folder / "img07.png").resolve())
    assert main(["search", str(tmp_path / "idx"), "a green square"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10


@pytest.mark.parametrize("argv, message", [
    (["search", "{tmp}/nowhere", "a circle"], "index {tmp}/nowhere does not exist"),
    (["search", "{idx}", "   "], "the text query is empty"),
    (["search", "{idx}"], "needs a text query or --image FILE"),
    (["search", "{idx}", "--image", "{tmp}/notes.txt"], "not an image"),
    (["search", "{idx}", "--image", "{tmp}/absent.png"], "no such file"),
    (["search", "{idx}", "a circle", "--k", "0"], "--k 0"),
])
def test_bad_search_input_is_one_line(clip_run, tmp_path, capsys, argv, message):
    idx = tmp_path / "idx"
    embed_source(clip_run, shapes(8), idx, progress=False)
    (tmp_path / "notes.txt").write_text("not a picture")
    capsys.readouterr()
    fill = {"tmp": str(tmp_path), "idx": str(idx)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zir: error:") and message.format(**fill) in err


def test_a_store_that_is_not_sqlite_is_one_line(tmp_path, capsys):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "items.sqlite").write_bytes(b"garbage" * 100)
    assert main(["search", str(tmp_path / "idx"), "a circle"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable SQLite file" in err
