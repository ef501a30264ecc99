"""Known-answer tests for code whose bugs the rest of the suite could not see.

Each test feeds hand-made input with a hand-computed answer, so that a deliberate bug
(see tools/mutation_check.py) makes it fail with a message naming what broke:

* predictions_to_dicts: BOX_SCORE_THRESH (at / below / above it), MIN_BOXES_PER_IMAGE,
  classes and boxes carried over, the pool's true labels never leaking in;
* PerClassVOCEvaluator: every class has a different AP, checked per class *name* against
  the VOC 11-point (2007) and area (2012) metrics computed by hand, and against
  Detectron2's voc_eval run on that class alone;
* ImageScorer: an image activation equal to the threshold is in the image mask (>=);
* tools/score_images.py --selector softmax: its scores.csv is the mean kept box score under
  a BOX_SCORE_THRESH that splits the model's boxes (so ignoring it changes the ranking).
"""
import csv
import os

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIG, load_tool, tiny_cfg_opts


# --------------------------------------------------------------------------- pseudo dicts
def _pool(n):
    """Unlabeled-pool dicts as the hook passes them: with (true) annotations and pool_index."""
    from detectron2.structures import BoxMode

    return [{"file_name": f"/pool/{i:03d}.jpg", "image_id": f"{i:03d}", "height": 60 + i,
             "width": 80, "pool_index": i,
             "annotations": [{"bbox": [1.0 + i, 2.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS,
                              "category_id": 3}]}
            for i in range(n)]


def _box(i, j):
    return [10.0 * j + i, 5.0 + i, 10.0 * j + 7.5 + i, 20.0 + j]


# per image: (scores, classes); box j of image i is _box(i, j)
PREDS = [
    ([0.49, 0.5, 0.51, 0.9], [0, 1, 2, 3]),  # below / at / above the threshold 0.5
    ([0.2, 0.3], [1, 1]),  # nothing reaches 0.5
    ([0.7], [2]),
    ([], []),  # no detection at all
    ([0.99, 0.5], [0, 3]),
]


def _predictions():
    """In the form selection.predict returns: float64/int64 numpy arrays."""
    return [{"boxes": np.array([_box(i, j) for j in range(len(s))], dtype=np.float64).reshape(-1, 4),
             "scores": np.array(s, dtype=np.float64), "classes": np.array(c, dtype=np.int64)}
            for i, (s, c) in enumerate(PREDS)]


@pytest.mark.parametrize("thresh,expected_counts", [
    (0.0, [4, 2, 1, 0, 2]),
    (0.5, [3, 0, 1, 0, 2]),
    (0.51, [2, 0, 1, 0, 1]),
    (0.95, [0, 0, 0, 0, 1]),
])
def test_predictions_to_dicts_applies_box_score_thresh(thresh, expected_counts):
    from detectron2.structures import BoxMode

    from imagescore_det.data.pseudo import predictions_to_dicts

    pool = _pool(len(PREDS))
    dicts, counts = predictions_to_dicts(pool, _predictions(), thresh, 0)
    assert counts == expected_counts, (
        f"BOX_SCORE_THRESH={thresh} not applied as `score >= thresh`: boxes kept per image "
        f"{counts}, expected {expected_counts} (scores {[s for s, _ in PREDS]})")
    assert [d["image_id"] for d in dicts] == [d["image_id"] for d in pool], \
        "MIN_BOXES_PER_IMAGE=0 must keep every image, in pool order"
    for i, d in enumerate(dicts):
        scores, classes = PREDS[i]
        keep = [j for j, s in enumerate(scores) if s >= thresh]
        want = [{"bbox": _box(i, j), "bbox_mode": BoxMode.XYXY_ABS, "category_id": classes[j],
                 "score": scores[j]} for j in keep]
        assert d["annotations"] == want, (
            f"image {i}: pseudo annotations (boxes/classes/scores) are not the predictions "
            f"scoring >= {thresh}, in prediction order:\n got  {d['annotations']}\n want {want}")
        for a in d["annotations"]:
            assert type(a["category_id"]) is int and type(a["score"]) is float
            assert all(type(v) is float for v in a["bbox"])


@pytest.mark.parametrize("min_boxes,kept", [
    (0, [0, 1, 2, 3, 4]),
    (1, [0, 2, 4]),
    (2, [0, 4]),
    (3, [0]),
    (4, []),
])
def test_predictions_to_dicts_applies_min_boxes_per_image(min_boxes, kept):
    from imagescore_det.data.pseudo import predictions_to_dicts

    pool = _pool(len(PREDS))
    dicts, counts = predictions_to_dicts(pool, _predictions(), 0.5, min_boxes)
    # counts are reported for every input image, dropped or not
    assert counts == [3, 0, 1, 0, 2], f"box counts per image wrong: {counts}"
    got = [int(d["image_id"]) for d in dicts]
    assert got == kept, (
        f"MIN_BOXES_PER_IMAGE={min_boxes} not applied: kept images {got}, expected {kept} "
        f"(boxes per image at thresh 0.5: {counts})")
    assert all(len(d["annotations"]) >= min_boxes for d in dicts)


def test_pseudo_dicts_never_carry_the_pools_true_labels():
    from imagescore_det.data.pseudo import predictions_to_dicts

    pool = _pool(len(PREDS))
    truth = [list(d["annotations"]) for d in pool]
    dicts, _ = predictions_to_dicts(pool, _predictions(), 0.5, 0)
    for i, d in enumerate(dicts):
        assert set(d) == {"file_name", "image_id", "height", "width", "annotations"}, \
            f"pseudo dict keys {sorted(d)}: pool_index must go, the image fields stay"
        assert {k: d[k] for k in ("file_name", "image_id", "height", "width")} == \
            {k: pool[i][k] for k in ("file_name", "image_id", "height", "width")}
        for a in d["annotations"]:
            assert a not in truth[i], f"image {i}: the pool's true annotation {a} leaked in"
            assert a["bbox"] != truth[i][0]["bbox"]
    # image 1/3 have no kept prediction: all-background, not their true boxes
    assert dicts[1]["annotations"] == [] and dicts[3]["annotations"] == []
    # the input dicts are left alone
    assert [d["annotations"] for d in pool] == truth and all("pool_index" in d for d in pool)


# --------------------------------------------------------------------------- per-class AP
# A tiny VOC-layout dataset: 3 images, 4 classes with a different AP each. Boxes are VOC
# XML (1-based, inclusive) coordinates; a prediction equal to a true box is given in
# Detectron2's 0-based XYXY (xmin-1, ymin-1, xmax, ymax), which the evaluator maps back,
# so a "hit" has IoU exactly 1 and counts at every IoU threshold 0.5..0.95.
AP_CLASSES = ("alpha", "bravo", "charlie", "delta")
AP_TRUTH = {
    "img1": [("alpha", (11, 11, 40, 40)), ("delta", (51, 11, 80, 40))],
    "img2": [("bravo", (11, 11, 40, 40)), ("delta", (51, 51, 80, 80))],
    "img3": [("charlie", (11, 11, 40, 40)), ("delta", (51, 11, 80, 40))],
}


def _hit(box):
    x0, y0, x1, y1 = box
    return [x0 - 1.0, y0 - 1.0, float(x1), float(y1)]


MISS = [85.0, 85.0, 95.0, 95.0]  # overlaps no true box
# (image, class, score, box). All scores differ (voc_eval sorts with an unstable argsort).
AP_PREDICTIONS = [
    ("img1", "alpha", 0.9, _hit((11, 11, 40, 40))),  # alpha: 1 TP of 1 -> AP 100
    ("img2", "bravo", 0.8, MISS),  # bravo: FP then TP of 1 -> precision 1/2 at recall 1
    ("img2", "bravo", 0.7, _hit((11, 11, 40, 40))),
    ("img3", "charlie", 0.6, MISS),  # charlie: only a FP -> AP 0
    ("img1", "delta", 0.95, _hit((51, 11, 80, 40))),  # delta: TP, FP, TP of 3 (one missed)
    ("img1", "delta", 0.85, MISS),
    ("img2", "delta", 0.75, _hit((51, 51, 80, 80))),
]
# delta: recall (1/3, 1/3, 2/3), precision (1, 1/2, 2/3)
#   11-point (2007): recall points 0, .1, .2, .3 -> max precision 1; .4, .5, .6 -> 2/3;
#                    .7 .. 1 -> 0: (4 * 1 + 3 * 2/3) / 11 = 6/11
#   area (2012): 1/3 * 1 + 1/3 * 2/3 = 5/9
# bravo: recall (0, 1), precision (0, 1/2): 1/2 at every recall point, and area 1/2
EXPECTED_AP = {
    2007: {"alpha": 100.0, "bravo": 50.0, "charlie": 0.0, "delta": 600.0 / 11},
    2012: {"alpha": 100.0, "bravo": 50.0, "charlie": 0.0, "delta": 500.0 / 9},
}


def _write_voc(dirname, truth=AP_TRUTH):
    """A VOC directory of ``truth`` ({image id: [(class, box)]}), 100x100 images, split test."""
    os.makedirs(os.path.join(dirname, "Annotations"))
    os.makedirs(os.path.join(dirname, "JPEGImages"))
    os.makedirs(os.path.join(dirname, "ImageSets", "Main"))
    for image_id, objects in truth.items():
        objs = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
        with open(os.path.join(dirname, "Annotations", image_id + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{image_id}.jpg</filename><size><width>100</width>"
                    f"<height>100</height><depth>3</depth></size>{objs}</annotation>")
    with open(os.path.join(dirname, "ImageSets", "Main", "test.txt"), "w") as f:
        f.write("\n".join(truth) + "\n")


def _outputs(image_id):
    from detectron2.structures import Boxes, Instances

    preds = [p for p in AP_PREDICTIONS if p[0] == image_id]
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor([p[3] for p in preds], dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([p[2] for p in preds], dtype=torch.float32)
    inst.pred_classes = torch.tensor([AP_CLASSES.index(p[1]) for p in preds], dtype=torch.int64)
    return {"instances": inst}


@pytest.mark.parametrize("year", [2007, 2012])
def test_per_class_ap_known_answers(year, tmp_path):
    import json

    from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval

    from imagescore_det.data import register_voc
    from imagescore_det.evaluation import PerClassVOCEvaluator

    dirname = str(tmp_path / "VOC")
    _write_voc(dirname)
    name = f"known_ap_{year}"
    register_voc(name, dirname, "test", year, AP_CLASSES, replace=True)
    out_dir = tmp_path / "eval"
    ev = PerClassVOCEvaluator(name, output_dir=str(out_dir))
    ev.reset()
    for image_id in AP_TRUTH:
        ev.process([{"image_id": image_id}], [_outputs(image_id)])
    bbox = ev.evaluate()["bbox"]
    expected = EXPECTED_AP[year]

    got = {c: bbox[f"AP50-{c}"] for c in AP_CLASSES}
    assert [k for k in bbox if k.startswith("AP50-")] == [f"AP50-{c}" for c in AP_CLASSES]
    for c in AP_CLASSES:
        assert got[c] == pytest.approx(expected[c], abs=1e-9), (
            f"{year} metric: AP50 of class {c!r} is {got[c]:.4f}, expected {expected[c]:.4f} "
            f"(per-class APs mixed up between classes? all: {got})")
    assert bbox["AP50"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    # every hit has IoU 1: the same AP at every IoU threshold
    assert bbox["AP75"] == pytest.approx(bbox["AP50"], abs=1e-9)
    assert bbox["AP"] == pytest.approx(bbox["AP50"], abs=1e-9)

    with open(out_dir / f"voc_per_class_{name}.json") as f:
        written = json.load(f)
    assert list(written["per_class"]) == list(AP_CLASSES)
    for c in AP_CLASSES:
        for key in ("AP50", "AP75", "AP"):
            assert written["per_class"][c][key] == pytest.approx(expected[c], abs=1e-9), (
                f"voc_per_class json: {key} of class {c!r} is {written['per_class'][c][key]}, "
                f"expected {expected[c]}")

    # and each class against Detectron2's voc_eval run on that class alone
    det_dir = tmp_path / "dets"
    det_dir.mkdir()
    for cls_id, c in enumerate(AP_CLASSES):
        lines = [f"{i} {s:.3f} {b[0] + 1:.1f} {b[1] + 1:.1f} {b[2]:.1f} {b[3]:.1f}"
                 for i, cn, s, b in AP_PREDICTIONS if cn == c]
        (det_dir / f"{c}.txt").write_text("\n".join(lines))
        parse_rec.cache_clear()
        _, _, ap = voc_eval(str(det_dir / "{}.txt"), os.path.join(dirname, "Annotations", "{}.xml"),
                            os.path.join(dirname, "ImageSets", "Main", "test.txt"), c,
                            ovthresh=0.5, use_07_metric=year == 2007)
        assert got[c] == pytest.approx(ap * 100, abs=1e-9), (
            f"AP50 of class {c!r} ({got[c]:.4f}) differs from voc_eval on that class alone "
            f"({ap * 100:.4f})")


# --------------------------------------------------------------------------- image mask
def test_image_mask_includes_activations_at_the_threshold():
    """M_I = 1{X >= t}: a neuron exactly at the threshold is in the image mask."""
    from collections import OrderedDict

    from torch import nn

    from imagescore_det.scoring import ImageScorer

    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    x = torch.tensor([[1.0, 2.0, 4.0, 0.0]])  # (N, F); t = 0.5 * max = 2.0, exactly
    scorer = ImageScorer(model, threshold_ratio=0.5).fit([x])
    assert scorer.masks[0].tolist() == [[False, True, True, False]], \
        f"dataset mask must be mean >= t (t = 2.0): {scorer.masks[0].tolist()}"
    for dtype in (torch.float32, torch.float64):
        scores, d = scorer.score([x.to(dtype)], details=True)
        assert d["image_mask_size"].tolist() == [[2.0]], (
            f"{dtype}: image mask must be X >= t: the neuron equal to the threshold is "
            f"missing (image mask size {d['image_mask_size'].tolist()}, expected 2)")
        assert scores.tolist() == [0.0], f"{dtype}: the fitted image itself scores {scores}"


# --------------------------------------------------------------------------- softmax tool
def _rank_order(scores):
    """Image indices best first, ties by index: plain-Python sorted()."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _mean_kept(box_scores, thresh):
    """The softmax baseline by hand: mean of kept scores; else best score - 1; else -1."""
    out = []
    for s in box_scores:
        kept = [v for v in s if v >= thresh]
        out.append(float(np.mean(kept)) if kept else (float(max(s)) - 1.0 if len(s) else -1.0))
    return out


def test_score_images_softmax_uses_box_score_thresh(tiny_voc, tmp_path):
    """The softmax selector ranks by the mean score of the boxes >= BOX_SCORE_THRESH."""
    from detectron2.data import DatasetCatalog, DatasetMapper

    from imagescore_det.engine import Trainer, load_config

    opts = tiny_cfg_opts(tmp_path / "out")
    cfg = load_config(TINY_CONFIG, opts)
    cfg.freeze()
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()  # an untrained detector: its boxes are enough
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)

    # the model's own predictions, one image at a time
    pool = DatasetCatalog.get("tiny_voc_test")
    mapper = DatasetMapper(cfg, is_train=False)
    with torch.no_grad():
        box_scores = [model([mapper(d)])[0]["instances"].scores.double().numpy() for d in pool]
    assert all(len(s) for s in box_scores), "the tiny model should detect something everywhere"

    # a threshold between two box scores near the median that changes the ranking
    values = np.unique(np.concatenate(box_scores))
    mid = len(values) // 2
    candidates = [(values[i] + values[i + 1]) / 2 for i in sorted(
        range(len(values) - 1), key=lambda i: abs(i - mid)) if values[i + 1] - values[i] > 1e-6]
    thresh = next((t for t in candidates if _rank_order(_mean_kept(box_scores, t))
                   != _rank_order(_mean_kept(box_scores, 0.0))), None)
    assert thresh is not None, "no threshold splits the boxes so that the ranking changes"
    thresh = float(thresh)
    expected = _mean_kept(box_scores, thresh)

    tool = load_tool("score_images")
    out_dir = tmp_path / "scores"
    summary = tool.main(tool.parse_args(
        ["--config-file", TINY_CONFIG, "--dataset", "tiny_voc_test", "--selector", "softmax",
         "--output", str(out_dir)]
        + opts + ["MODEL.WEIGHTS", weights, "IMAGE_SCORE.BOX_SCORE_THRESH", repr(thresh)]))
    with open(out_dir / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == [d["image_id"] for d in pool]
    scores = [float(r["score"]) for r in rows]
    ignored = _mean_kept(box_scores, 0.0)
    np.testing.assert_allclose(
        scores, expected, rtol=0, atol=1e-7,
        err_msg=f"score_images --selector softmax does not score by the mean box score >= "
                f"IMAGE_SCORE.BOX_SCORE_THRESH={thresh!r} (with the threshold ignored the "
                f"scores would be {ignored})")
    ranks = {int(r["rank"]): i for i, r in enumerate(rows)}
    assert [ranks[k] for k in range(1, len(rows) + 1)] == _rank_order(expected), \
        "scores.csv ranks are not the softmax confidence ranking (best first, ties by order)"
    assert summary["box_score_thresh"] == thresh
