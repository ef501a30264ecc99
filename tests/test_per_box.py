"""Per-box correctness: box matching, pool_boxes.csv, the stratified and per-box AUROCs."""
import itertools

import numpy as np
import pytest

from imagescore_det.engine import selection
from imagescore_det.evaluation.auroc import auroc, auroc_interval, stratified_auroc
from imagescore_det.evaluation.pseudo_labels import match_boxes, match_image


# --------------------------------------------------------------------------- matching
def test_match_boxes_known_answer():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    gt_classes = [0, 0]
    # box 0 and box 2 both cover true box 0; box 2 scores higher and takes it; box 1 is of
    # the wrong class; box 3 matches true box 1; box 4 overlaps nothing
    pred = [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 11], [21, 20, 30, 30], [50, 50, 60, 60]]
    scores = [0.6, 0.9, 0.8, 0.7, 0.95]
    classes = [0, 1, 0, 0, 0]
    assert match_boxes(pred, scores, classes, gt, gt_classes).tolist() == [
        False, False, True, True, False]
    assert match_image(pred, scores, classes, gt, gt_classes) == (2, 3, 2)
    assert match_boxes([], [], [], gt, gt_classes).tolist() == []
    assert match_boxes(pred[:1], [0.5], [0], [], []).tolist() == [False]


def _brute_force_correct(pred, scores, classes, gt, gt_classes, thresh):
    """Every match decision by hand: boxes by decreasing score (stable), each takes the free
    same-class true box of highest IoU >= thresh (first on ties)."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    free, out = set(range(len(gt))), [False] * len(pred)
    for i in sorted(range(len(pred)), key=lambda i: -scores[i]):
        best, best_j = thresh, None
        for j in sorted(free):
            v = iou(pred[i], gt[j])
            if gt_classes[j] == classes[i] and v >= best and (best_j is None or v > best):
                best, best_j = v, j
        if best_j is not None:
            free.discard(best_j)
            out[i] = True
    return out


def test_match_boxes_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(200):
        def boxes(n):
            xy = rng.integers(0, 20, (n, 2)).astype(float)
            return np.hstack([xy, xy + rng.integers(2, 12, (n, 2))]).tolist()

        gt, pred = boxes(int(rng.integers(0, 4))), boxes(int(rng.integers(0, 6)))
        gt_classes = rng.integers(0, 2, len(gt)).tolist()
        classes = rng.integers(0, 2, len(pred)).tolist()
        scores = rng.choice([0.5, 0.7, 0.9], len(pred)).tolist()
        got = match_boxes(pred, scores, classes, gt, gt_classes, 0.3).tolist()
        assert got == _brute_force_correct(pred, scores, classes, gt, gt_classes, 0.3), trial
        assert match_image(pred, scores, classes, gt, gt_classes, 0.3)[:2] == (
            sum(got), len(got) - sum(got))


# --------------------------------------------------------------------------- AUROCs
def test_stratified_auroc_counts_only_pairs_within_a_stratum():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = 30
        scores = rng.integers(0, 5, n).astype(float)
        positives = rng.random(n) < 0.5
        strata = rng.integers(1, 4, n)
        pairs = [(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
                 for i, j in itertools.product(range(n), range(n))
                 if positives[i] and not positives[j] and strata[i] == strata[j]]
        got = stratified_auroc(scores, positives, strata)
        assert (got is None and not pairs) or got == pytest.approx(np.mean(pairs))
    # known answer: inside each stratum the score is perfect, across strata it is reversed
    scores = [1.0, 2.0, 10.0, 11.0]
    positives = [False, True, False, True]
    assert stratified_auroc(scores, positives, [1, 1, 2, 2]) == 1.0
    assert auroc(scores, positives) == 0.75
    assert stratified_auroc(scores, positives, [1, 2, 3, 4]) is None


def test_auroc_interval_by_groups():
    rng = np.random.default_rng(2)
    scores, positives = rng.random(40), rng.random(40) < 0.5
    # one item a group: the item bootstrap itself
    assert auroc_interval(scores, positives, 200, groups=np.arange(40)) == \
        auroc_interval(scores, positives, 200)
    # resampled whole: a group of a positive above its negative stays a perfect pair
    paired = auroc_interval([2.0, 1.0, 4.0, 3.0, 6.0, 5.0], [1, 0, 1, 0, 1, 0], 100,
                            groups=[0, 0, 1, 1, 2, 2])
    assert paired["auroc"] == pytest.approx(6 / 9)
    assert paired["ci"][1] == 1.0  # a resample of one group only
    together = auroc_interval([1.0, 0.0, 1.0, 0.0], [1, 0, 1, 0], 100, groups=[0, 0, 1, 1])
    assert together["ci"] == [1.0, 1.0]


# --------------------------------------------------------------------------- the round
def _pool():
    from detectron2.structures import BoxMode

    def ann(box, cls):
        return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls}

    return [
        {"file_name": "a.jpg", "image_id": "a", "domain": "typical",
         "annotations": [ann([0, 0, 10, 10], 0), ann([20, 20, 30, 30], 1)]},
        {"file_name": "b.jpg", "image_id": "b", "domain": "shifted",
         "annotations": [ann([5, 5, 15, 15], 2)]},
        {"file_name": "c.jpg", "image_id": "c", "domain": "typical", "annotations": []},
    ]


# per image: (boxes, scores, classes) the stand-in detector predicts
PREDICTED = {
    "a.jpg": ([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8, 0.3], [0, 2, 0]),
    "b.jpg": ([[5, 5, 15, 15], [5, 5, 15, 15]], [0.6, 0.7], [2, 2]),
    "c.jpg": ([[1, 1, 5, 5]], [0.55], [1]),
}
# at BOX_SCORE_THRESH 0.5: a -> box 0 correct, box 1 wrong class (box 2 below the threshold);
# b -> 0.7 box takes the truth, 0.6 duplicate wrong; c -> wrong (no truth)
EXPECTED = [[(0, 0.9, True), (2, 0.8, False)], [(2, 0.6, False), (2, 0.7, True)],
            [(1, 0.55, False)]]


def test_round_writes_every_would_be_pseudo_box(monkeypatch, tmp_path):
    import torch

    from imagescore_det.engine import get_imagescore_cfg, round_files
    from imagescore_det.engine.round import compute_round, summarize

    def predict(cfg, model, dicts, desc="pseudo-label", skipped=None):
        out = []
        for d in dicts:
            boxes, scores, classes = PREDICTED[d["file_name"]]
            out.append({"boxes": np.asarray(boxes, float), "scores": np.asarray(scores),
                        "classes": np.asarray(classes)})
        return out, 0.0

    monkeypatch.setattr(selection, "predict", predict)
    cfg = get_imagescore_cfg()
    cfg.merge_from_list(["IMAGE_SCORE.SELECTOR", "random", "IMAGE_SCORE.ANALYZE_POOL", True,
                         "IMAGE_SCORE.BOX_SCORE_THRESH", 0.5])
    pool = _pool()
    result = compute_round(cfg, torch.nn.Linear(1, 1), pool, 1, 3, list, seed=0)
    assert [[(c, pytest.approx(s), k) for c, s, k in image] for image in result.pool_boxes] \
        == EXPECTED
    # the per-image counts are the per-box flags summed
    assert [list(q) for q in result.pool_quality] == [[1, 1, 2], [1, 1, 1], [0, 1, 0]]
    manifest = summarize(result, cfg, ["p", "q", "r"], "fp")
    directory = tmp_path / "round_1"
    round_files.write_round(str(directory), result, manifest, plots=False)
    rows = round_files.read_pool_boxes_csv(str(directory / round_files.POOL_BOXES_CSV))
    assert [(r["pool_index"], r["image_id"], r["category_id"], r["confidence"], r["correct"])
            for r in rows] == [(i, pool[i]["image_id"], c, s, int(k))
                               for i, image in enumerate(EXPECTED) for c, s, k in image]


def test_bench_quality_correctness_aurocs_known_answers():
    from conftest import load_tool

    bq = load_tool("bench_quality", "benchmarks")
    # 6 images: scores, domains; boxes: (pool index, confidence, correct)
    pool = [{"score": s, "domain": d} for s, d in zip(
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        ["typical", "typical", "shifted", "typical", "shifted", "typical"])]
    boxes = [(0, 0.9, 1), (1, 0.8, 1), (1, 0.3, 0), (2, 0.7, 0), (3, 0.95, 1), (3, 0.9, 1),
             (5, 0.2, 0)]  # image 4 has no box: not judged
    rows = [{"pool_index": i, "confidence": c, "correct": k} for i, c, k in boxes]
    out = bq.correctness_aurocs(pool, rows, own_confidence=False, resamples=50)
    box_scores = [pool[i]["score"] for i, _, _ in boxes]
    box_correct = [bool(k) for _, _, k in boxes]
    assert out["auroc_box"] == auroc(box_scores, box_correct)
    assert out["auroc_box_confidence"] == auroc([c for _, c, _ in boxes], box_correct)
    assert out["boxes_judged"] == 7 and out["auroc_images"] == 5
    assert out["share_correct_boxes"] == pytest.approx(4 / 7)
    # images: 0 (1 box, ok), 1 (2 boxes, wrong), 2 (1, wrong), 3 (2, ok), 5 (1, wrong)
    # stratum 1: pos {0.9} vs neg {0.7, 0.4}: 2 of 2 pairs; stratum 2: pos {0.6} vs neg {0.8}: 0
    assert out["auroc_stratified"] == pytest.approx(2 / 3)
    # typical: images 0, 1, 3, 5 -> positives 0.9, 0.6; negatives 0.8, 0.4 -> 3 of 4 pairs
    assert out["auroc_typical"] == pytest.approx(0.75)
    assert out["auroc_box_typical"] == auroc([0.9, 0.8, 0.8, 0.6, 0.6, 0.4],
                                             [True, True, False, True, True, False])
    assert out["auroc_shifted"] is None and out["boxes_judged_shifted"] == 1
    own = bq.correctness_aurocs(pool, rows, own_confidence=True, resamples=50)
    assert own["auroc_box"] == own["auroc_box_confidence"] == out["auroc_box_confidence"]
    assert own["auroc_stratified"] == out["auroc_stratified"]  # images keep their score
