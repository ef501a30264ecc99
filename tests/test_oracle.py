"""The oracle selector: random's choice, the pool's ground truth as pseudo-labels."""
import json
import math
import os

import numpy as np
import pytest

from imagescore_det.engine import selection
from imagescore_det.engine.ranking import rank_order

from test_selection import SELECT_OPTS, _train


def _cfg(*opts):
    from imagescore_det.engine import get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.merge_from_list(["IMAGE_SCORE.BOX_SCORE_THRESH", 0.5, *opts])
    return cfg


def _box(x0, y0, x1, y1, cls, **extra):
    from detectron2.structures import BoxMode

    return dict({"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls},
                **extra)


def _pool(true_box_counts):
    """A pool whose image i has true_box_counts[i] true boxes (known coordinates)."""
    return [{"file_name": f"img{i}.jpg", "image_id": i, "height": 100, "width": 100,
             "annotations": [_box(j, j, 10 + j + i, 20 + j, (i + j) % 3) for j in range(n)]}
            for i, n in enumerate(true_box_counts)]


def _round(selector, pool, seed, monkeypatch, predicted_boxes=None, *opts):
    """compute_round with a stand-in detector: each image gets predicted_boxes[i] boxes at
    score 0.9 (the same count as its truth unless given)."""
    from imagescore_det.engine.round import compute_round

    counts = predicted_boxes or [len(d["annotations"]) for d in pool]
    by_file = {d["file_name"]: n for d, n in zip(pool, counts)}
    calls = []

    def predict(cfg, model, dicts, desc="pseudo-label", skipped=None):
        calls.append([d["file_name"] for d in dicts])
        return [{"boxes": np.tile([[1.0, 2.0, 30.0, 40.0]], (by_file[d["file_name"]], 1)),
                 "scores": np.full(by_file[d["file_name"]], 0.9),
                 "classes": np.zeros(by_file[d["file_name"]], dtype=np.int64)}
                for d in dicts], 0.0

    monkeypatch.setattr(selection, "predict", predict)
    model = __import__("torch").nn.Linear(1, 1)
    cfg = _cfg("IMAGE_SCORE.SELECTOR", selector, *opts)
    return compute_round(cfg, model, pool, 1, 5, list, seed=seed), calls


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_oracle_chooses_exactly_what_random_chooses(seed, monkeypatch):
    pool = _pool([1, 2, 3, 1, 2] * 4)
    rand, _ = _round("random", pool, seed, monkeypatch)
    oracle, calls = _round("oracle", pool, seed, monkeypatch)
    np.testing.assert_array_equal(oracle.scores, rand.scores)
    np.testing.assert_array_equal(oracle.chosen, rand.chosen)
    np.testing.assert_array_equal(oracle.examined, rand.examined)
    # known answer: the random selector's stream (seed * 1000 + round), top ceil(0.3 * 20)
    expected = rank_order(selection.random_scores(20, seed * 1000 + 1))[:6]
    assert oracle.chosen.tolist() == expected.tolist()
    assert calls == []  # the detector does not label the oracle's images


def test_oracle_pseudo_boxes_are_the_truth(monkeypatch):
    from detectron2.structures import BoxMode

    pool = _pool([1, 2, 3, 1, 2] * 4)
    # one image's truth in XYWH, one crowd box: boxes are given as Detectron2 trains them
    pool[3]["annotations"] = [_box(5, 6, 10, 20, 2)]
    pool[3]["annotations"][0]["bbox_mode"] = BoxMode.XYWH_ABS
    pool[4]["annotations"].append(_box(0, 0, 50, 50, 1, iscrowd=1))
    # class-agnostic NMS and a threshold would remove overlapping or any boxes of a detector;
    # the truth goes in as it is
    result, _ = _round("oracle", pool, 0, monkeypatch, None, "IMAGE_SCORE.TOP_FRACTION", 1.0,
                       "IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS", True,
                       "IMAGE_SCORE.PSEUDO_NMS_THRESH", 0.01)
    assert sorted(result.examined.tolist()) == list(range(20))  # TOP_FRACTION 1.0: all
    by_file = {d["file_name"]: d for d in result.pseudo}
    assert len(by_file) == 20
    for d in pool:
        expected = [[float(v) for v in BoxMode.convert(a["bbox"], a["bbox_mode"],
                                                        BoxMode.XYXY_ABS)] + [a["category_id"]]
                    for a in d["annotations"] if not a.get("iscrowd", 0)]
        got = [list(a["bbox"]) + [a["category_id"]] for a in by_file[d["file_name"]]["annotations"]]
        assert got == expected, d["file_name"]
    assert by_file["img3.jpg"]["annotations"][0]["bbox"] == [5.0, 6.0, 15.0, 26.0]
    assert [list(row[:2]) for row in result.quality] == [
        [len(by_file[pool[i]["file_name"]]["annotations"]), 0] for i in result.examined]


def test_oracle_back_fills_by_random_rank_like_random(monkeypatch):
    # the images that random's detector leaves without a box are those without a true box
    counts = [1, 0, 2, 0, 1, 1, 0, 3, 1, 1, 2, 0]
    pool = _pool(counts)
    rand, _ = _round("random", pool, 4, monkeypatch)
    oracle, _ = _round("oracle", pool, 4, monkeypatch)
    order = rank_order(selection.random_scores(12, 4001)).tolist()
    k = math.ceil(0.3 * 12)
    expected = order[:next(j for j in range(1, 13)
                           if sum(counts[i] > 0 for i in order[:j]) == k)]
    assert oracle.examined.tolist() == rand.examined.tolist() == expected
    assert len(expected) > k  # the case back-fills
    assert sum(oracle.trained) == k


def test_oracle_needs_the_pool_truth():
    from imagescore_det.engine.selectors import SelectorContext, rank_pool

    cfg = _cfg("IMAGE_SCORE.SELECTOR", "oracle")
    pool = [{"file_name": "a.jpg", "image_id": 0}, {"file_name": "b.jpg", "image_id": 1,
                                                   "annotations": []}]
    with pytest.raises(ValueError, match="no ground truth.*e.g. a.jpg"):
        rank_pool("oracle", SelectorContext(cfg=cfg, model=None, pool=pool, labeled=list))


def test_oracle_whole_pool_run_trains_on_every_pool_image_with_its_truth(tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.SELECTOR", "oracle",
                   "IMAGE_SCORE.TOP_FRACTION", "1.0")
    _train(cfg)
    rd = os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1")
    manifest = json.load(open(os.path.join(rd, "selection.json")))
    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    assert manifest["selector"] == "oracle" and manifest["num_pseudo_images"] == len(pool)
    assert manifest["pseudo_precision"] == 1.0 and manifest["pseudo_recall"] == 1.0
    registered = {d["file_name"]: d for d in DatasetCatalog.get(manifest["dataset_name"])}
    for d in pool:
        assert [(a["bbox"], a["category_id"]) for a in registered[d["file_name"]]["annotations"]] \
            == [(list(map(float, a["bbox"])), a["category_id"]) for a in d["annotations"]]


def _pool_without_truth(tiny_voc):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "tiny_voc_unlabeled_no_truth"
    if name not in DatasetCatalog.list():
        source = tiny_voc["names"]["unlabeled"]
        DatasetCatalog.register(name, lambda: [
            {k: v for k, v in d.items() if k != "annotations"}
            for d in DatasetCatalog.get(source)])
        MetadataCatalog.get(name).set(thing_classes=MetadataCatalog.get(source).thing_classes)
    return name


@pytest.mark.parametrize("selector", ["random", "oracle"])
def test_oracle_on_a_pool_without_truth_stops_before_training(selector, tiny_cfg, tiny_voc):
    """Only the oracle guard differs between the two cases: random trains on that pool."""
    from imagescore_det.engine import ConfigError

    name = _pool_without_truth(tiny_voc)
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.UNLABELED_DATASETS", f"('{name}',)",
                   "IMAGE_SCORE.SELECTOR", selector, "IMAGE_SCORE.EVAL_PSEUDO_LABELS", "False")
    if selector == "random":
        _train(cfg)
        assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        return
    with pytest.raises(ConfigError) as info:
        _train(cfg)
    message = str(info.value)
    for part in ("IMAGE_SCORE.SELECTOR is 'oracle'", name, "IMAGE_SCORE.UNLABELED_DATASETS",
                 "no ground truth"):
        assert part in message
    assert "random" in message  # the fix: a pool with annotations, or another selector
    metrics = os.path.join(cfg.OUTPUT_DIR, "metrics.json")  # no iteration ran
    assert not os.path.exists(metrics) or "total_loss" not in open(metrics).read()
    assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
