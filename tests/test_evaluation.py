"""Tests of imagescore_det.evaluation: per-class VOC AP and pseudo-label quality."""
import json
import os

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, Instances

from imagescore_det.evaluation import PerClassVOCEvaluator
from imagescore_det.evaluation.pseudo_labels import (
    box_iou,
    match_image,
    precision_by_score_bin,
    pseudo_label_quality,
)

# --------------------------------------------------------------------------- VOC evaluator


def _outputs(dataset, preds_of):
    """(inputs, outputs) for evaluator.process: ``preds_of(record)`` -> [(box, score, cls)]."""
    inputs, outputs = [], []
    for rec in dataset:
        preds = preds_of(rec)
        inst = Instances((rec["height"], rec["width"]))
        inst.pred_boxes = Boxes(torch.tensor([p[0] for p in preds], dtype=torch.float32)
                                .reshape(-1, 4))
        inst.scores = torch.tensor([p[1] for p in preds], dtype=torch.float32)
        inst.pred_classes = torch.tensor([p[2] for p in preds], dtype=torch.int64)
        inputs.append({"image_id": rec["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(evaluator, dataset, preds_of):
    evaluator.reset()
    inputs, outputs = _outputs(dataset, preds_of)
    for i in range(0, len(inputs), 2):  # in batches of 2, as a data loader would
        evaluator.process(inputs[i:i + 2], outputs[i:i + 2])
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def test_split(tiny_voc):
    name = tiny_voc["names"]["test"]
    dataset = DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).thing_classes
    # every class occurs, so "perfect predictions -> 100 for every class" is meaningful
    assert {a["category_id"] for r in dataset for a in r["annotations"]} == set(range(len(classes)))
    return name, dataset, classes


def _gt_preds(rec):
    return [(a["bbox"], 1.0, a["category_id"]) for a in rec["annotations"]]


def test_ground_truth_as_predictions_gives_100(test_split, tmp_path):
    name, dataset, classes = test_split
    res = _evaluate(PerClassVOCEvaluator(name, output_dir=str(tmp_path)), dataset, _gt_preds)
    bbox = res["bbox"]
    for c in classes:
        assert bbox[f"AP50-{c}"] == pytest.approx(100.0)
    assert bbox["AP50"] == pytest.approx(100.0)
    assert bbox["AP75"] == pytest.approx(100.0)
    assert bbox["AP"] == pytest.approx(100.0)
    assert set(bbox) == {"AP", "AP50", "AP75"} | {f"AP50-{c}" for c in classes}


def test_missing_class_known_answer(test_split):
    """No predictions at all for one class: its AP is 0, the others' 100, the mean 75."""
    name, dataset, classes = test_split
    dropped = 2

    def preds(rec):
        return [p for p in _gt_preds(rec) if p[2] != dropped]

    bbox = _evaluate(PerClassVOCEvaluator(name), dataset, preds)["bbox"]
    for i, c in enumerate(classes):
        assert bbox[f"AP50-{c}"] == pytest.approx(0.0 if i == dropped else 100.0)
    assert bbox["AP50"] == pytest.approx(100.0 * (len(classes) - 1) / len(classes))


def _mixed_preds(rec):
    """Deterministic mix per image: correct, shifted (IoU ~0.5-0.8), wrong-class, duplicate
    and background boxes, with scores that interleave them."""
    rng = np.random.default_rng(int(rec["image_id"]))
    out = []
    for k, a in enumerate(rec["annotations"]):
        x0, y0, x1, y1 = a["bbox"]
        w, h = x1 - x0, y1 - y0
        c = a["category_id"]
        kind = (int(rec["image_id"]) + k) % 4
        if kind == 0:  # correct
            out.append(([x0, y0, x1, y1], float(rng.uniform(0.3, 1.0)), c))
        elif kind == 1:  # shifted: IoU about 0.55-0.65, passes 0.5 and fails 0.75
            d = float(rng.uniform(0.22, 0.28)) * w
            out.append(([x0 + d, y0, x1 + d, y1], float(rng.uniform(0.3, 1.0)), c))
        elif kind == 2:  # wrong class, right place
            out.append(([x0, y0, x1, y1], float(rng.uniform(0.3, 1.0)), (c + 1) % 4))
        else:  # correct, plus a lower-scored duplicate (a false positive)
            s = float(rng.uniform(0.5, 1.0))
            out.append(([x0, y0, x1, y1], s, c))
            out.append(([x0 + 1, y0 + 1, x1 - 1, y1], s / 2, c))
        if rng.uniform() < 0.5:  # far off, badly shifted box
            out.append(([x0 + w * 0.6, y0 + h * 0.6, x1 + w * 0.6, y1 + h * 0.6],
                        float(rng.uniform(0.0, 0.9)), c))
    # background box
    out.append(([0, 0, 12, 12], float(rng.uniform(0.0, 0.6)), int(rng.integers(4))))
    return out


def test_mixed_predictions_match_detectron2(test_split, tmp_path):
    name, dataset, classes = test_split
    out_dir = tmp_path / "inference"
    ours = _evaluate(PerClassVOCEvaluator(name, output_dir=str(out_dir)), dataset,
                     _mixed_preds)["bbox"]
    ref = _evaluate(PascalVOCDetectionEvaluator(name), dataset, _mixed_preds)["bbox"]
    for k in ("AP", "AP50", "AP75"):
        assert ours[k] == pytest.approx(float(ref[k]), abs=1e-9), k
    # the mix is not trivial: not perfect, not zero, and stricter IoU lowers AP
    assert 0 < ours["AP75"] < ours["AP50"] < 100
    per_class = [ours[f"AP50-{c}"] for c in classes]
    assert np.mean(per_class) == pytest.approx(ours["AP50"])
    assert len(set(np.round(per_class, 6))) > 1  # classes differ

    # the JSON file
    path = out_dir / f"voc_per_class_{name}.json"
    assert path.is_file()
    data = json.loads(path.read_text())
    assert data["dataset"] == name
    assert data["mean"] == pytest.approx({k: ours[k] for k in ("AP", "AP50", "AP75")})
    assert list(data["per_class"]) == list(classes)
    for c in classes:
        assert data["per_class"][c]["AP50"] == pytest.approx(ours[f"AP50-{c}"])
        assert 0 <= data["per_class"][c]["AP75"] <= data["per_class"][c]["AP50"]
    assert np.mean([v["AP"] for v in data["per_class"].values()]) == pytest.approx(ours["AP"])
    assert np.mean([v["AP75"] for v in data["per_class"].values()]) == pytest.approx(ours["AP75"])
    assert not [f for f in os.listdir(out_dir) if f.endswith(".tmp")]


def test_no_output_dir_writes_nothing(test_split, tmp_path, monkeypatch):
    name, dataset, _ = test_split
    monkeypatch.chdir(tmp_path)
    res = _evaluate(PerClassVOCEvaluator(name), dataset, lambda rec: [])
    assert res["bbox"]["AP50"] == 0.0
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- pseudo-label quality


def test_match_image_hand_computed():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    gt_cls = [0, 1, 1]
    preds = [
        ([0, 0, 10, 10], 0.9, 0),    # TP: gt 0
        ([0, 0, 10, 10], 0.8, 0),    # FP: duplicate of gt 0 (already matched)
        ([20, 20, 30, 30], 0.7, 0),  # FP: right place, wrong class (gt 1 is class 1)
        ([20, 20, 30, 40], 0.6, 1),  # IoU with gt 1 = 100 / 200 = 0.5 exactly: TP at 0.5
        ([0, 0, 10, 10], 0.5, 1),    # TP: gt 2 (same place as gt 0, other class)
    ]
    boxes, scores, cls = zip(*preds)
    assert match_image(boxes, scores, cls, gt, gt_cls, iou_thresh=0.5) == (3, 2, 3)
    assert match_image(boxes, scores, cls, gt, gt_cls, iou_thresh=0.51) == (2, 3, 3)
    # order given does not matter, scores do: reversed input, same answer
    assert match_image(boxes[::-1], scores[::-1], cls[::-1], gt, gt_cls) == (3, 2, 3)


def test_match_image_greedy_by_score():
    gt = [[0, 0, 10, 10]]
    # the higher-scored prediction takes the box even though the other overlaps it more
    boxes = [[0, 0, 10, 10], [2, 0, 12, 10]]
    assert match_image(boxes, [0.2, 0.9], [0, 0], gt, [0]) == (1, 1, 1)
    # the best IoU among unmatched boxes is taken, so the second prediction still matches
    gt2 = [[0, 0, 10, 10], [1, 0, 11, 10]]
    assert match_image([[1, 0, 11, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0], gt2, [0, 0]) \
        == (2, 0, 2)


def test_match_image_empty():
    assert match_image([], [], [], [[0, 0, 5, 5]], [0]) == (0, 0, 1)
    assert match_image([[0, 0, 5, 5]], [0.5], [0], [], []) == (0, 1, 0)
    assert match_image([], [], [], [], []) == (0, 0, 0)


def test_pseudo_label_quality():
    true = [[{"bbox": [0, 0, 10, 10], "category_id": 0}], [],
            [{"bbox": [5, 5, 15, 15], "category_id": 1}, {"bbox": [0, 0, 4, 4], "category_id": 1}]]
    pseudo = [[{"bbox": [0, 0, 10, 10], "category_id": 0, "score": 0.9},
               {"bbox": [0, 0, 10, 10], "category_id": 0, "score": 0.95}],
              [{"bbox": [1, 1, 3, 3], "category_id": 2}],
              [{"bbox": [5, 5, 15, 15], "category_id": 1}]]
    assert pseudo_label_quality(pseudo, true) == [(1, 1, 1), (0, 1, 0), (1, 0, 2)]


def _iou_brute(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = min(p[2], q[2]) - max(p[0], q[0])
            ih = min(p[3], q[3]) - max(p[1], q[1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            ua = max(p[2] - p[0], 0) * max(p[3] - p[1], 0)
            ub = max(q[2] - q[0], 0) * max(q[3] - q[1], 0)
            union = ua + ub - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def _random_boxes(rng, n):
    xy = rng.uniform(0, 50, size=(n, 2))
    wh = rng.uniform(0, 30, size=(n, 2))
    wh[rng.uniform(size=n) < 0.1] = 0.0  # some degenerate (zero-area) boxes
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return np.round(boxes) if rng.uniform() < 0.5 else boxes  # integer coords: touching edges


@pytest.mark.parametrize("seed", range(6))
def test_box_iou_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    a, b = _random_boxes(rng, int(rng.integers(0, 9))), _random_boxes(rng, int(rng.integers(0, 9)))
    b[: min(len(a), len(b))][::2] = a[: min(len(a), len(b))][::2]  # some identical pairs
    got = box_iou(a, b)
    assert got.shape == (len(a), len(b))
    np.testing.assert_allclose(got, _iou_brute(a, b), rtol=1e-12, atol=1e-12)
    assert ((got >= 0) & (got <= 1 + 1e-12)).all()
    np.testing.assert_allclose(box_iou(b, a), got.T)


def test_box_iou_known_values():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 0, 0], [2, 2, 4, 4]]
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0, 4 / 100]])
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 0.0  # zero area: no NaN
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 1)


def test_precision_by_score_bin_known_input():
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    tps = [1, 0, 2, 1, 1, 0]
    fps = [1, 1, 0, 0, 1, 2]
    bins = precision_by_score_bin(scores, tps, fps, num_bins=3)
    assert bins == [
        {"score_min": 0.1, "score_max": 0.2, "images": 2, "boxes": 3, "precision": 0.0},
        {"score_min": 0.3, "score_max": 0.5, "images": 2, "boxes": 3, "precision": 2 / 3},
        {"score_min": 0.7, "score_max": 0.9, "images": 2, "boxes": 4, "precision": 0.75},
    ]
    # more bins than images: one image a bin; an image without boxes has precision None
    bins = precision_by_score_bin([0.4, 0.2], [0, 1], [0, 1], num_bins=5)
    assert [(b["images"], b["boxes"], b["precision"]) for b in bins] == [(1, 2, 0.5),
                                                                          (1, 0, None)]
    # unequal split: 5 images in 2 bins -> 3 + 2, low scores first
    bins = precision_by_score_bin([5, 4, 3, 2, 1], [1] * 5, [0] * 5, num_bins=2)
    assert [(b["score_min"], b["score_max"], b["images"]) for b in bins] == [(1, 3, 3), (4, 5, 2)]
    assert precision_by_score_bin([], [], [], num_bins=3) == []
