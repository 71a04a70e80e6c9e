"""`inspect_source`: counts, class balance, caption statistics, bad files, and the PNG it writes."""

import io

from PIL import Image

from zir.data.inspect import inspect_source, summary_lines


def png(color=(10, 200, 30), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, (12, 12), color if mode == "RGB" else 100).save(buf, "PNG")
    return buf.getvalue()


def test_inspect_a_messy_labelled_folder(tmp_path):
    root = tmp_path / "data"
    for cls, n in (("cat", 3), ("dog", 1)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(png())
    (root / "dog" / "gray.png").write_bytes(png(mode="L"))
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    info = inspect_source(root, tmp_path / "grid.png", plan={"global": 2, "local": 1, "size": 16, "patch_size": 4})
    assert info["samples"] == 6 and info["read"] == 6 and info["ok"] == 5
    assert info["classes"] == {"cat": 3, "dog": 2}
    assert info["bad"]["skipped"] == {"not an image": 1} and info["bad"]["examples"]["not an image"] == ["dog/broken.png"]
    assert info["bad"]["converted"] == {"grayscale converted to RGB": 1}
    grid = Image.open(info["png"])
    assert grid.size[0] == 8 * 96 and grid.size[1] > 96 * 4  # one row of samples, three rows of views
    text = "\n".join(summary_lines(info))
    assert "cat: 3, dog: 2" in text and "1 not an image (first: dog/broken.png)" in text


def test_inspect_shapes_caption_statistics(tmp_path):
    info = inspect_source("shapes:test", None, n=50, cache_dir=tmp_path, limit=20)
    assert info["samples"] == 50 and info["ok"] == 20 and info["png"] is None
    assert info["captions"]["per_image"]["mean"] == 5.0
    assert 3 <= info["captions"]["words"]["min"] <= info["captions"]["words"]["mean"] <= info["captions"]["words"]["max"] <= 30
    assert info["image_sizes"] == {"64x64": 20}
