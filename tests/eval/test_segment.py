"""Dense features: shapes' per-pixel masks match the pictures, the linear segmentation probe reaches high mIoU on
features that encode the masks, and mIoU counts what it should."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import torch
import yaml
from PIL import Image

from zir.cli import main
from zir.data import open_source
from zir.data.shape_masks import mask_classes, pixel_masks
from zir.data.shapes import _RGB, generate_shapes
from zir.eval.run_eval import evaluate_run
from zir.eval.segment import evaluate_objectness, evaluate_segmentation, mean_iou
from zir.eval.splits import eval_data
from zir.eval.segment_pictures import EXAMPLES, MASKS_FILE, class_colour, load_segment_masks
from zir.model import build_model
from zir.train import save_checkpoint


def test_masks_cover_the_painted_objects_and_nothing_else():
    data = generate_shapes(200, split="val", size=32)
    shape, colour = pixel_masks(data, "shape"), pixel_masks(data, "colour")
    assert shape.shape == (200, 32, 32) and set(np.unique(shape)) <= set(range(6))
    assert ((shape > 0) == (colour > 0)).all()
    painted = _RGB[np.clip(colour - 1, 0, None)]  # the colour each pixel would have if it were an object's
    diff = np.abs(data.images.astype(float) - painted).mean(-1)
    assert diff[colour > 0].mean() < 15 < 60 < diff[colour == 0].mean()
    # one object per image: the mask's class is the image's shape label, wherever the object is
    single = generate_shapes(50, size=32, objects=(1, 1))
    masks = pixel_masks(single, "shape")
    assert all(set(np.unique(m)) == {0, int(s) + 1} for m, s in zip(masks, single.shape[:, 0]))
    assert mask_classes("colour")[0] == "background" and len(mask_classes("shape")) == 6


def test_the_source_gives_masks_of_the_images_it_serves():
    source = open_source("shapes", split="val", size=32, n=20)
    assert np.array_equal(source.pixel_masks("shape", [3, 5]), pixel_masks(source.data, "shape")[[3, 5]])


def test_mean_iou_of_known_predictions():
    truth = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = torch.tensor([[0, 0, 1, 0], [0, 0, 2, 2]])
    miou, ious, acc = mean_iou(pred, truth, 4)  # class 3 occurs nowhere: left out of the mean
    assert ious[0] == 100 * 4 / 5 and ious[1] == 50.0 and ious[2] == 100.0 and ious[3] is None
    assert abs(miou - (80 + 50 + 100) / 3) < 1e-9 and acc == 100 * 7 / 8


def _one_hot_maps(masks: torch.Tensor, patch: int, classes: int) -> torch.Tensor:
    """(N, classes, H/patch, W/patch) share of each class in each patch: features that encode the masks."""
    hot = torch.nn.functional.one_hot(masks, classes).permute(0, 3, 1, 2).float()
    return torch.nn.functional.avg_pool2d(hot, patch)


def test_probe_on_features_that_encode_the_masks_reaches_high_miou():
    classes = mask_classes("shape")
    masks = torch.from_numpy(pixel_masks(generate_shapes(600, size=32, objects=(1, 1), object_scale=2.0), "shape"))
    train, test = masks[:400], masks[400:]
    noise = torch.Generator().manual_seed(0)
    exact = evaluate_segmentation(_one_hot_maps(train, 1, 6), train, _one_hot_maps(test, 1, 6), test, classes)
    assert exact["mIoU"] > 99.0 and exact["pixel_acc"] > 99.9
    # at patch resolution (8x8 tokens upsampled to 32x32 pixels), with 32 noise channels beside them
    maps = [torch.cat([_one_hot_maps(m, 4, 6), torch.randn(len(m), 32, 8, 8, generator=noise)], 1) for m in (train, test)]
    patches = evaluate_segmentation(maps[0], train, maps[1], test, classes)
    # a linear map of 4x4-pixel patches cannot draw the edges inside a patch: measured 70.4-70.6 over noise and
    # probe seeds 0-3 (the exact pixel-level features above: > 99)
    assert patches["mIoU"] > 65.0 and patches["iou"]["background"] > 90.0, patches
    assert set(patches["iou"]) == set(classes)


def test_the_objectness_probe_asks_where_an_object_is_not_which_shape():
    classes = mask_classes("shape")
    masks = torch.from_numpy(pixel_masks(generate_shapes(600, size=32, objects=(1, 1), object_scale=2.0), "shape"))
    train, test = masks[:400], masks[400:]
    noise = torch.Generator().manual_seed(0)
    # features that say object or background at each pixel and nothing of the shape, beside 8 noise channels
    maps = [torch.cat([_one_hot_maps((m > 0).long(), 1, 2), torch.randn(len(m), 8, 32, 32, generator=noise)], 1)
            for m in (train, test)]
    found = evaluate_objectness(maps[0], train, maps[1], test)
    assert found["object_IoU"] > 99.0 and found["object_mIoU"] > 99.0 and found["object_pixel_acc"] > 99.9, found
    # the per-shape probe on the same features cannot name the shape: every shape's IoU stays low
    shapes = evaluate_segmentation(maps[0], train, maps[1], test, classes)
    assert max(shapes["iou"][c] or 0.0 for c in classes[1:]) < 60.0 < shapes["iou"]["background"], shapes
    # features that know nothing: the object is missed or smeared, far below the informed probe
    blind_train, blind_test = (torch.randn(len(m), 8, 8, 8, generator=noise) for m in (train, test))
    blind = evaluate_objectness(blind_train, train, blind_test, test)
    assert blind["object_IoU"] < 40.0, blind


def test_zir_eval_segment_writes_miou_its_random_init_and_the_report_s_masks(tmp_path, capsys):
    recipe = {"name": "tiny", "model": {"towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16}},
                                        "objectives": {"mae": {}}},
              "data": {"source": "shapes", "batch_size": 8, "options": {"n": 16, "size": 16, "objects": [1, 1]}},
              "train": {"steps": 1, "ckpt_every": 0, "threads": 1}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--tasks", "segment", "--baseline", "--limit", "40"]) == 0
    printed = capsys.readouterr().out
    assert "segment" in printed and "object_IoU" in printed
    entry = json.loads((run / "results.json").read_text())["segment"]
    assert 0.0 <= entry["random_init"]["mIoU"] <= 100.0 and 0.0 <= entry["mIoU"] <= 100.0
    assert entry["n_train"] == entry["n_test"] == 40 and entry["masks"] == "shape"
    for probe in (entry, entry["random_init"]):  # the shape-agnostic probe, for the run and its random init
        assert 0.0 <= probe["object_IoU"] <= 100.0 and 0.0 <= probe["object_mIoU"] <= 100.0
    assert set(entry["iou"]) == {"background", "circle", "square", "triangle", "diamond", "cross"}
    # the trained tower's masks for the first test images, kept for the report: image | truth | prediction
    masks = load_segment_masks(run / MASKS_FILE)
    assert masks["images"].shape == (EXAMPLES, 16, 16, 3) and masks["images"].dtype == np.uint8
    assert masks["truth"].shape == masks["prediction"].shape == (EXAMPLES, 16, 16)
    assert masks["prediction"].min() >= 0 and masks["prediction"].max() < 6 and list(masks["classes"])[0] == "background"
    test = eval_data(None, yaml.safe_load((run / "config.yaml").read_text()), None, limit=40).test
    first = test.indices[:EXAMPLES]
    assert np.array_equal(masks["truth"], test.inner.pixel_masks("shape", first))
    assert np.array_equal(masks["images"], test.inner.data.images[first])
    page = (run / "report.html").read_text()
    section = page.split("<h2>Segmentation masks</h2>")[1].split("</section>")[0]
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', section).group(1))
    assert png.startswith(b"\x89PNG") and "true mask" in section and "cross" in section
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    for colour in {class_colour(int(c)) for c in np.unique(masks["truth"])}:  # every true class is drawn in its colour
        assert (picture == colour).all(-1).any(), colour


def test_segment_is_skipped_on_data_without_masks(tmp_path):
    section = {"towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16}}, "objectives": {"mae": {}}}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, build_model(section).state_dict(), {"step": 1})
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"name": "t", "model": section, "data": {"source": "digits"}}))
    entry = evaluate_run(tmp_path / "run", "segment", limit=20)["segment"]
    assert "per-pixel masks" in entry["skipped"]
