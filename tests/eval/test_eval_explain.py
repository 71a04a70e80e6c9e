"""Explanation pictures: colours, panel grids, image reading errors, and the whole picture."""

import numpy as np
import pytest
import torch
from PIL import Image

import zir
from zir.errors import ZirError
from zir.eval.explain import explain_image, read_image
from zir.eval.pictures import colourise, save_panels, upsample_map


def test_colourise_runs_dark_to_bright():
    colours = colourise(np.array([[0.0, 0.5, 1.0, 2.0]]))
    assert colours.dtype == np.uint8 and colours.shape == (1, 4, 3)
    brightness = colours.astype(int).sum(-1)[0]
    assert brightness[0] < brightness[1] < brightness[2] and brightness[2] == brightness[3]


def test_upsample_map_repeats_each_patch_and_scales_to_unit_range():
    grid = torch.tensor([[0.0, 2.0], [4.0, 8.0]])
    up = upsample_map(grid, (4, 4))
    assert up.shape == (4, 4) and up.min() == 0.0 and up.max() == 1.0
    assert np.all(up[:2, 2:] == 0.25)


def test_save_panels_lays_out_rows_and_columns(tmp_path):
    panel = np.zeros((8, 8, 3), np.uint8)
    path = save_panels([[("a", panel), ("b", panel)], [("c", panel)]], tmp_path / "p.png", scale=2)
    with Image.open(path) as img:
        assert img.size == (2 * (16 + 4), 2 * (16 + 14 + 4))


def test_read_image_resizes_normalises_and_names_bad_files(tmp_path):
    Image.fromarray(np.full((10, 20, 3), 255, np.uint8)).save(tmp_path / "white.png")
    x = read_image(tmp_path / "white.png", (16, 32))
    assert x.shape == (1, 3, 16, 32)
    torch.testing.assert_close(x[0, 0, 0, 0], torch.tensor((1 - 0.485) / 0.229))
    with pytest.raises(ZirError, match="does not exist"):
        read_image(tmp_path / "missing.png", (16, 16))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ZirError, match="broken.jpg cannot be decoded"):
        read_image(tmp_path / "broken.jpg", (16, 16))


def test_explain_image_writes_one_row_per_image(tmp_path):
    torch.manual_seed(0)
    tower = zir.create_model("vit_nano_patch4_32", num_classes=0)
    info = explain_image(tower, torch.randn(2, 3, 32, 32), tmp_path / "explain.png")
    assert info["grid"] == [8, 8] and info["heads"] == 2
    with Image.open(info["png"]) as img:
        columns = 1 + 1 + 2 + 1  # image, rollout, two heads, PCA
        assert img.size == (columns * (32 * 4 + 4), 2 * (32 * 4 + 14 + 4))
