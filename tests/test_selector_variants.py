"""The selector variants: hybrid (confidence filter, image-score rank), image_score_per_class
(per-class masks over the predicted classes) and IMAGE_SCORE.SCORE_RESIZE (fixed resize)."""
import math
import types

import numpy as np
import pytest
import torch

from imagescore_det.engine import selection
from imagescore_det.engine.ranking import rank_order
from imagescore_det.engine.selectors import SelectorContext, rank_pool
from imagescore_det.scoring.scorer import RATIO_FLOOR


def _cfg(*opts):
    from imagescore_det.engine import get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _prediction(box_scores, classes=None):
    box_scores = np.asarray(box_scores, dtype=np.float64)
    classes = np.zeros(len(box_scores), dtype=np.int64) if classes is None else classes
    return {"boxes": np.zeros((len(box_scores), 4)), "scores": box_scores,
            "classes": np.asarray(classes, dtype=np.int64)}


# --------------------------------------------------------------------------- hybrid
def _fake_passes(monkeypatch, predictions, image_score, num_layers=13):
    """selection.predict / image_scores replaced by fixed answers; returns the call log."""
    calls = []
    scorer = types.SimpleNamespace(layer_names=[f"l{i}" for i in range(num_layers)])

    def predict(cfg, model, dicts, desc="pseudo-label", skipped=None):
        calls.append("predict")
        return list(predictions), 0.5

    def image_scores(cfg, model, labeled, pool, skipped=None, seed=0):
        calls.append("image_scores")
        return np.asarray(image_score, dtype=np.float64), scorer, 0.25

    monkeypatch.setattr(selection, "predict", predict)
    monkeypatch.setattr(selection, "image_scores", image_scores)
    return calls


def _rank_hybrid(cfg, n):
    ctx = SelectorContext(cfg=cfg, model=None, pool=[{}] * n, labeled=list)
    return rank_pool("hybrid", ctx)


def test_hybrid_ordering_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 25))
        thresh, min_conf = 0.5, float(rng.choice([0.5, 0.6, 0.7, 0.9]))
        # 0-3 boxes per image with scores on a coarse grid (ties in confidence and score)
        predictions = [_prediction(rng.choice([0.1, 0.4, 0.55, 0.7, 0.8, 0.95],
                                              size=int(rng.integers(0, 4))))
                       for _ in range(n)]
        image_score = -rng.integers(0, 6, size=n).astype(float) * 2.5  # in [-12.5, 0]
        calls = _fake_passes(monkeypatch, predictions, image_score)
        cfg = _cfg("IMAGE_SCORE.BOX_SCORE_THRESH", thresh,
                   "IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", min_conf)
        ranking = _rank_hybrid(cfg, n)
        # brute force: the softmax confidence by hand, then (fails the filter, -score, pool order)
        confidence = []
        for p in predictions:
            kept = [s for s in p["scores"] if s >= thresh]
            confidence.append(sum(kept) / len(kept) if kept else -1.0)
        brute = sorted(range(n), key=lambda i: (confidence[i] < min_conf, -image_score[i], i))
        assert rank_order(ranking.scores).tolist() == brute, trial
        passing = [i for i in range(n) if confidence[i] >= min_conf]
        np.testing.assert_array_equal(ranking.scores[passing], image_score[passing])
        # one inference pass over the pool, kept for the pseudo-labels
        assert calls == ["predict", "image_scores"]
        assert ranking.predictions == predictions
        assert set(ranking.timing) == {"inference_pool_s", "scoring_s"}


def test_hybrid_high_score_low_confidence_ranks_below_every_passing_image(monkeypatch):
    # image 0: the best image score, confidence 0.6 < 0.7; images 1-3 pass with worse scores,
    # image 3 with the floor score of every layer (the lowest an ImageScorer gives)
    num_layers = 13
    lowest = num_layers * math.log(RATIO_FLOOR)
    predictions = [_prediction([0.6]), _prediction([0.9]), _prediction([0.75, 0.8]),
                   _prediction([0.99])]
    image_score = [0.0, -40.0, -3.0, lowest]
    _fake_passes(monkeypatch, predictions, image_score, num_layers)
    ranking = _rank_hybrid(_cfg("IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", 0.7), 4)
    assert rank_order(ranking.scores).tolist() == [2, 1, 3, 0]
    assert ranking.scores[0] < ranking.scores[3]
    assert np.isfinite(ranking.scores).all()


def test_hybrid_threshold_is_not_ignored(monkeypatch):
    predictions = [_prediction([0.55]), _prediction([0.65]), _prediction([0.75]),
                   _prediction([0.95]), _prediction([])]
    image_score = [-1.0, -2.0, -3.0, -4.0, -0.5]
    orders = {}
    for min_conf in (0.5, 0.6, 0.7, 0.9, 1.0):
        _fake_passes(monkeypatch, predictions, image_score)
        ranking = _rank_hybrid(_cfg("IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", min_conf), 5)
        orders[min_conf] = rank_order(ranking.scores).tolist()
    assert orders == {0.5: [0, 1, 2, 3, 4], 0.6: [1, 2, 3, 4, 0], 0.7: [2, 3, 4, 0, 1],
                      0.9: [3, 4, 0, 1, 2], 1.0: [4, 0, 1, 2, 3]}


def test_confidence_filtered_scores_known_answer():
    lowest = 2 * math.log(RATIO_FLOOR)
    out = selection.confidence_filtered_scores([-1.0, -2.0, np.nan, lowest],
                                               [0.8, 0.2, 0.9, 0.7], 0.7, num_layers=2)
    np.testing.assert_allclose(out[[0, 3]], [-1.0, lowest])
    assert out[1] == pytest.approx(-2.0 + lowest - 1.0) and np.isnan(out[2])
    assert selection.below_every_image_score(2) == pytest.approx(lowest - 1.0)


# --------------------------------------------------------------------------- per class
def _box(x0, y0, x1, y1, category, mode=None):
    from detectron2.structures import BoxMode

    return {"bbox": [x0, y0, x1, y1], "bbox_mode": mode or BoxMode.XYXY_ABS,
            "category_id": category}


def test_largest_box_class_known_answers():
    from detectron2.structures import BoxMode

    assert selection.largest_box_class({"annotations": [
        _box(0, 0, 10, 10, 2), _box(5, 5, 30, 12, 1), _box(0, 0, 4, 4, 3)]}) == 1  # 175 > 100
    # XYWH: (0, 0, 20, 20) is 400 pixels, beyond the XYXY box's 100
    assert selection.largest_box_class({"annotations": [
        _box(0, 0, 10, 10, 2), _box(0, 0, 20, 20, 3, BoxMode.XYWH_ABS)]}) == 3
    # a tie: the first box in annotation order
    assert selection.largest_box_class({"annotations": [
        _box(0, 0, 10, 20, 2), _box(0, 0, 20, 10, 0)]}) == 2
    assert selection.largest_box_class({"annotations": []}) is None
    assert selection.largest_box_class({}) is None


def test_top_box_class_known_answers():
    assert selection.top_box_class(_prediction([0.6, 0.9, 0.7], [3, 1, 2]), 0.5) == 1
    assert selection.top_box_class(_prediction([0.9, 0.9], [2, 0]), 0.5) == 2  # first on a tie
    assert selection.top_box_class(_prediction([0.4, 0.3], [2, 0]), 0.5) is None
    assert selection.top_box_class(_prediction([0.5], [3]), 0.5) == 3  # >= the threshold
    assert selection.top_box_class(_prediction([]), 0.0) is None


def _mapped_batches(cfg, model, dicts, labels=None, resize=None):
    """One ImageBatch per image, built by hand (Detectron2's test mapper, or a PIL bilinear
    resize to ``resize`` (h, w) of the decoded image)."""
    from PIL import Image

    from detectron2.data import DatasetMapper
    from detectron2.data.detection_utils import read_image

    from imagescore_det.scoring import ImageBatch

    mapper = DatasetMapper(cfg, is_train=False)
    for i, d in enumerate(dicts):
        if resize is None:
            item = mapper(d)
        else:
            image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
            image = np.asarray(Image.fromarray(image).resize((resize[1], resize[0]),
                                                             Image.BILINEAR))
            item = {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        images = model.preprocess_image([item])
        yield ImageBatch(inputs=images.tensor, valid_sizes=[tuple(images.image_sizes[0])],
                         labels=None if labels is None else [labels[i]])


@pytest.fixture
def tiny_model_data(tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import Trainer

    def make(*opts):
        cfg = tiny_cfg(*opts)
        torch.manual_seed(0)
        model = Trainer.build_model(cfg).eval()
        return (cfg, model, DatasetCatalog.get(tiny_voc["names"]["labeled"]),
                DatasetCatalog.get(tiny_voc["names"]["unlabeled"]))

    return make


# the hand-fitted reference warns about the class left out; the selector does not
@pytest.mark.filterwarnings("ignore:ImageScorer. no fitted image has class")
def test_per_class_scores_equal_a_brute_force_per_class_scorer(tiny_model_data):
    from imagescore_det.scoring import ImageScorer

    cfg, model, labeled, pool = tiny_model_data("IMAGE_SCORE.GRID", "(4, 4)",
                                                "IMAGE_SCORE.BOX_SCORE_THRESH", "0.5")
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES

    def largest(d):  # by hand: XYXY boxes, strictly larger replaces
        best, area = None, -1
        for a in d["annotations"]:
            x0, y0, x1, y1 = a["bbox"]
            if (x1 - x0) * (y1 - y0) > area:
                best, area = a["category_id"], (x1 - x0) * (y1 - y0)
        return best

    true_classes = [largest(d) for d in labeled]
    # leave one class out of the fit, so some pool images predict a class without a mask
    missing = max(set(true_classes), key=true_classes.count)
    fit = [(d, c) for d, c in zip(labeled, true_classes) if c != missing]
    fit_dicts = [d for d, _ in fit]
    assert len({c for _, c in fit}) >= 2

    rng = np.random.default_rng(1)
    predictions = []
    for i in range(len(pool)):
        k = int(rng.integers(1, 4))
        predictions.append(_prediction(rng.uniform(0.55, 0.99, size=k),
                                       rng.integers(0, num_classes, size=k)))
    predictions[2] = _prediction([0.3, 0.45], [1, 2])  # no box kept at 0.5
    predictions[5] = _prediction([])  # no detection at all
    predictions[7] = _prediction([0.9, 0.6], [missing, 0])  # top class has no mask
    scores, scorer, unscored, _ = selection.per_class_image_scores(
        cfg, model, fit_dicts, pool, predictions)

    ref = ImageScorer(model.backbone, layers=r"conv\d_\d", grid=(4, 4), num_classes=num_classes)
    ref.fit(_mapped_batches(cfg, model, fit_dicts, [c for _, c in fit]))
    assert torch.equal(ref.class_counts, scorer.class_counts)
    top = [None if not len(p["scores"]) or max(p["scores"]) < 0.5
           else int(p["classes"][int(np.argmax(p["scores"]))]) for p in predictions]
    scored = [i for i, c in enumerate(top) if c is not None and c != missing]
    expected = ref.score(_mapped_batches(cfg, model, [pool[i] for i in scored],
                                         [top[i] for i in scored])).numpy()
    np.testing.assert_allclose(scores[scored], expected, rtol=0, atol=1e-12)
    unranked = sorted(set(range(len(pool))) - set(scored))
    assert {2, 5, 7} <= set(unranked) and unscored == len(unranked)
    floor = len(scorer.layer_names) * math.log(RATIO_FLOOR) - 1.0
    np.testing.assert_array_equal(scores[unranked], floor)
    assert np.isfinite(scores).all() and scores[scored].min() > floor
    # images without a box to score by rank after every scored image, by pool order
    order = rank_order(scores).tolist()
    assert order[-len(unranked):] == unranked
    # the class matters: scored against another fitted class, an image's score changes
    other = [c for c in sorted({c for _, c in fit}) if c != top[scored[0]]][0]
    moved = list(predictions)
    moved[scored[0]] = _prediction([0.99], [other])
    again, _, _, _ = selection.per_class_image_scores(cfg, model, fit_dicts, pool, moved)
    expected_other = ref.score(_mapped_batches(cfg, model, [pool[scored[0]]], [other])).item()
    assert again[scored[0]] == pytest.approx(expected_other, abs=1e-12)


def test_per_class_selector_skips_unreadable_pool_images(tiny_model_data, monkeypatch):
    """An image predict could not read stays out: NaN score, in ctx.skipped."""
    cfg, model, labeled, pool = tiny_model_data("IMAGE_SCORE.GRID", "(4, 4)")
    predictions = [_prediction([0.9], [i % 2]) for i in range(len(pool))]
    predictions[3] = None

    def predict(cfg, model, dicts, desc="pseudo-label", skipped=None):
        skipped[3] = "OSError: unreadable"
        return predictions, 0.0

    monkeypatch.setattr(selection, "predict", predict)
    ctx = SelectorContext(cfg=cfg, model=model, pool=pool, labeled=lambda: labeled,
                          skipped={})
    ranking = rank_pool("image_score_per_class", ctx)
    assert ctx.skipped == {3: "OSError: unreadable"} and np.isnan(ranking.scores[3])
    assert np.isfinite(np.delete(ranking.scores, 3)).all()
    assert ranking.predictions is predictions and ranking.scorer.num_classes == 4


# --------------------------------------------------------------------------- SCORE_RESIZE
@pytest.mark.parametrize("batch_size", [1, 3])
def test_score_resize_equals_a_resize_by_hand_with_grid_none(tiny_model_data, batch_size):
    from imagescore_det.scoring import ImageScorer

    cfg, model, labeled, pool = tiny_model_data(
        "IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(40, 56)",
        "IMAGE_SCORE.BATCH_SIZE", str(batch_size))
    sizes = {(d["height"], d["width"]) for d in pool}
    assert len(sizes) > 1  # images of different sizes, no grid
    scores, scorer, _ = selection.image_scores(cfg, model, labeled, pool)
    assert scorer.grid is None and np.isfinite(scores).all()
    ref = ImageScorer(model.backbone, layers=r"conv\d_\d", grid=None)
    ref.fit(_mapped_batches(cfg, model, labeled, resize=(40, 56)))
    expected = ref.score(_mapped_batches(cfg, model, pool, resize=(40, 56))).numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scorer.layer_shapes == ref.layer_shapes
    assert scorer.layer_shapes[0][1:] == (40, 56)  # conv1_1 keeps the input size


def test_two_pool_images_of_different_sizes_score_with_resize_and_no_grid(tiny_model_data):
    cfg, model, labeled, pool = tiny_model_data("IMAGE_SCORE.GRID", "()",
                                                "IMAGE_SCORE.SCORE_RESIZE", "(32, 32)")
    by_size = {}
    for d in pool:
        by_size.setdefault((d["height"], d["width"]), d)
    two = list(by_size.values())[:2]
    assert len(two) == 2
    scores, _, _ = selection.image_scores(cfg, model, labeled, two)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    # without the resize the same call cannot line the maps up
    cfg_off, _, _, _ = tiny_model_data("IMAGE_SCORE.GRID", "()")
    with pytest.raises(ValueError, match="grid"):
        selection.image_scores(cfg_off, model, labeled, two)


def test_score_resize_must_fit_a_padding_backbone_without_grid():
    backbone = types.SimpleNamespace(size_divisibility=32)
    cfg = _cfg("IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(48, 64)")
    with pytest.raises(ValueError, match=r"SCORE_RESIZE \(48, 64\) is not a multiple .* 32"):
        selection._check_resize_fits_backbone(cfg, backbone)
    selection._check_resize_fits_backbone(
        _cfg("IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(64, 96)"), backbone)
    selection._check_resize_fits_backbone(  # a grid crops the padding away
        _cfg("IMAGE_SCORE.SCORE_RESIZE", "(48, 64)"), backbone)


def test_only_image_score_selectors_without_resize_need_equal_sizes():
    from imagescore_det.engine.consistency import needs_equal_sizes

    for selector, grid, resize, needed in [
            ("image_score", "()", "()", True), ("hybrid", "()", "()", True),
            ("image_score_per_class", "()", "()", True),
            ("image_score", "()", "(32, 32)", False), ("hybrid", "()", "(32, 32)", False),
            ("image_score", "(4, 4)", "()", False), ("softmax", "()", "()", False),
            ("random", "()", "()", False)]:
        cfg = _cfg("IMAGE_SCORE.SELECTOR", selector, "IMAGE_SCORE.GRID", grid,
                   "IMAGE_SCORE.SCORE_RESIZE", resize)
        assert needs_equal_sizes(cfg) == needed, (selector, grid, resize)


def test_grid_none_with_score_resize_passes_the_trainer_check_and_runs_a_round(tiny_cfg):
    """The size check at trainer start refuses GRID () on this data (test_paper_path); with
    SCORE_RESIZE it lets the round run, and the round's mask has the resized map sizes."""
    import os

    from test_selection import SELECT_OPTS, _train

    from imagescore_det.engine import round_files
    from imagescore_det.scoring import ImageScorer

    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE",
                   "(32, 40)", "IMAGE_SCORE.SELECTOR", "hybrid", max_iter=3)
    trainer = _train(cfg)
    directory = round_files.round_dir(cfg.OUTPUT_DIR, 1)
    record = round_files.read_round(directory)
    assert record.manifest.selector == "hybrid" and record.manifest.pool_size == 12
    assert "IMAGE_SCORE.SCORE_RESIZE" in record.manifest.fingerprint_items
    scorer = ImageScorer.load(os.path.join(directory, "mask.pt"), trainer.model.backbone)
    assert scorer.grid is None and scorer.layer_shapes[0][1:] == (32, 40)
