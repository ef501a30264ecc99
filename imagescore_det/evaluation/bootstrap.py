"""Paired bootstrap over test images: is run B's VOC AP better than run A's?

Two runs evaluated on the same test set (their detections files, see
:mod:`~imagescore_det.evaluation.detections`) are compared on the same resamples: each
resample draws the test images with replacement, and both runs' VOC AP50 and AP (mean over
IoU 0.50:0.95) are recomputed on it. The difference B - A over the resamples gives

* a 95% percentile interval of the difference;
* a one-sided p-value: the share of resamples in which B does *not* beat A (a tie counts
  half), so a small p says B is better than A; identical runs give exactly 0.5.

VOC AP here equals Detectron2's ``voc_eval`` bit for bit on the full test set (same
matching, same ordering of tied scores, same 11-point or area metric; the tests check it),
without parsing XML per call. On a resample, an image drawn k times counts k times: its
detections are matched once (matching is within an image) and weigh k on the
precision/recall curve, which is what voc_eval would give on a test set holding k copies
of it (copies' tied detections taken next to each other). A class without ground truth in
the test set (or in a resample) has no AP there and is left out of that mean.

Plain NumPy; no Detectron2 import.
"""
import math
from dataclasses import dataclass
from typing import List

import numpy as np

from .detections import Evaluation, load_detections

IOU_THRESHOLDS = [thresh / 100.0 for thresh in range(50, 100, 5)]  # as the evaluator's
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
_EPS = np.finfo(np.float64).eps


class TestSetMismatchError(ValueError):
    """Two runs evaluated on different test sets: nothing image-by-image to compare."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------- VOC AP
def voc_ap(rec, prec, use_07_metric=False):
    """Detectron2's ``voc_ap`` (the same operations, so the same floats)."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope (exact maxima)
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


@dataclass
class _ClassCurve:
    """One run, one class: its detections in voc_eval's order and, per IoU threshold,
    which of them are true / false positives (or neither: matched to a difficult object)."""

    image_index: np.ndarray  # (n,) index into the test set's image ids, sorted detections
    tp: List[np.ndarray]     # per threshold, (n,) 1.0 / 0.0
    fp: List[np.ndarray]
    tp_pos: List[np.ndarray]  # per threshold, positions of the true positives
    ignored_pos: List[np.ndarray]  # per threshold, positions of neither-TP-nor-FP detections
    cut: int                 # detections after the last TP (at any threshold) never change AP


def _class_ground_truth(evaluation, name):
    """Per image: the class's boxes (float, as voc_eval), difficult flags; and npos per image."""
    boxes, difficult, npos = [], [], np.zeros(len(evaluation.image_ids), dtype=np.int64)
    for i, image_id in enumerate(evaluation.image_ids):
        objs = [o for o in evaluation.ground_truth[image_id] if o[0] == name]
        b = np.array([o[2:6] for o in objs]).astype(float)
        d = np.array([o[1] for o in objs]).astype(bool)
        boxes.append(b)
        difficult.append(d)
        npos[i] = int(np.sum(~d))
    return boxes, difficult, npos


def _curve(evaluation, name, image_pos, gt_boxes, gt_difficult):
    dets = evaluation.detections[name]
    confidence = np.array(dets["scores"], dtype=float)
    boxes = np.array(dets["boxes"], dtype=float).reshape(-1, 4)
    order = np.argsort(-confidence)  # exactly voc_eval's (unstable) sort: same tie order
    boxes = boxes[order, :]
    image_index = np.array([image_pos[dets["image_ids"][k]] for k in order], dtype=np.int64)
    n = len(order)
    ovmax = np.full(n, -np.inf)
    jmax = np.zeros(n, dtype=np.int64)
    matched_difficult = np.zeros(n, dtype=bool)
    by_image = np.argsort(image_index, kind="stable")
    images, starts = np.unique(image_index[by_image], return_index=True)
    for img, rows in zip(images, np.split(by_image, starts[1:])):
        bbgt = gt_boxes[img]
        if bbgt.size == 0:
            continue
        bb = boxes[rows]
        # voc_eval's overlaps, one detection per row (the same float operations)
        ixmin = np.maximum(bbgt[None, :, 0], bb[:, None, 0])
        iymin = np.maximum(bbgt[None, :, 1], bb[:, None, 1])
        ixmax = np.minimum(bbgt[None, :, 2], bb[:, None, 2])
        iymax = np.minimum(bbgt[None, :, 3], bb[:, None, 3])
        iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
        ih = np.maximum(iymax - iymin + 1.0, 0.0)
        inters = iw * ih
        uni = ((bb[:, 2] - bb[:, 0] + 1.0) * (bb[:, 3] - bb[:, 1] + 1.0))[:, None] \
            + ((bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0))[None, :] \
            - inters
        overlaps = inters / uni
        ovmax[rows] = np.max(overlaps, axis=1)
        jmax[rows] = np.argmax(overlaps, axis=1)
        matched_difficult[rows] = gt_difficult[img][jmax[rows]]
    width = 1 + max((len(b) for b in gt_boxes), default=0)
    keys = image_index * width + jmax
    tps, fps, tp_pos, ignored_pos = [], [], [], []
    for thresh in IOU_THRESHOLDS:
        hit = ovmax > thresh
        tp, fp = np.zeros(n), np.zeros(n)
        fp[~hit] = 1.0
        candidates = np.flatnonzero(hit & ~matched_difficult)  # in score order
        _, first = np.unique(keys[candidates], return_index=True)  # first detection of a gt
        fp[candidates] = 1.0
        fp[candidates[first]] = 0.0
        tp[candidates[first]] = 1.0
        tps.append(tp)
        fps.append(fp)
        tp_pos.append(np.flatnonzero(tp))
        ignored_pos.append(np.flatnonzero(hit & matched_difficult))
    cut = max((int(p[-1]) + 1 for p in tp_pos if len(p)), default=0)
    return _ClassCurve(image_index=image_index, tp=tps, fp=fps, tp_pos=tp_pos,
                       ignored_pos=[p[p < cut] for p in ignored_pos], cut=cut)


class PreparedRun:
    """One run's detections matched to the ground truth once, ready for any resample."""

    def __init__(self, evaluation: Evaluation):
        self.evaluation = evaluation
        image_pos = {image_id: i for i, image_id in enumerate(evaluation.image_ids)}
        self.npos = []  # per class, (num_images,)
        self.curves = []
        for name in evaluation.classes:
            boxes, difficult, npos = _class_ground_truth(evaluation, name)
            self.npos.append(npos)
            self.curves.append(_curve(evaluation, name, image_pos, boxes, difficult))

    def full_set_ap(self):
        """``(classes, thresholds)`` AP in percent on the whole test set, exactly as
        Detectron2's voc_eval * 100 (NaN for a class without ground truth)."""
        out = np.full((len(self.curves), len(IOU_THRESHOLDS)), np.nan)
        for c, curve in enumerate(self.curves):
            npos = int(self.npos[c].sum())
            if npos == 0:
                continue
            for t in range(len(IOU_THRESHOLDS)):
                tp, fp = np.cumsum(curve.tp[t]), np.cumsum(curve.fp[t])
                rec = tp / float(npos)
                prec = tp / np.maximum(tp + fp, _EPS)
                out[c, t] = voc_ap(rec, prec, self.evaluation.use_07_metric) * 100
        return out

    def resampled_ap(self, weights, thresholds=None):
        """``(resamples, classes, thresholds)`` AP in percent; ``weights`` is
        ``(resamples, num_images)``: how often each test image was drawn.

        AP depends only on the curve's points at true positives (a false positive's
        precision is below the true positive before it, at the same recall), so per
        resample only the cumulative weights of all detections (once per class, whatever
        the threshold) and of the true positives and ignored detections are needed."""
        thresholds = range(len(IOU_THRESHOLDS)) if thresholds is None else thresholds
        weights = np.asarray(weights, dtype=float)
        out = np.full((len(weights), len(self.curves), len(IOU_THRESHOLDS)), np.nan)
        for c, curve in enumerate(self.curves):
            npos = weights @ self.npos[c].astype(float)
            chunk = max(1, 4_000_000 // max(curve.cut, 1))
            for start in range(0, len(weights), chunk):
                rows = slice(start, start + chunk)
                det_weights = weights[rows][:, curve.image_index[:curve.cut]]
                seen = np.cumsum(det_weights, axis=1)  # detections up to each position
                for t in thresholds:
                    out[rows, c, t] = _ap_at_true_positives(
                        det_weights, seen, curve.tp_pos[t], curve.ignored_pos[t], npos[rows],
                        self.evaluation.use_07_metric) * 100
            out[npos == 0, c, :] = np.nan
        return out


def _ap_at_true_positives(det_weights, seen, tp_pos, ignored_pos, npos, use_07_metric):
    """voc_ap of each row's curve, detection ``d`` counted ``det_weights[r, d]`` times,
    from the points at the true positives ``tp_pos``."""
    if len(tp_pos) == 0:
        return np.zeros(len(det_weights))
    tpc = np.cumsum(det_weights[:, tp_pos], axis=1)
    counted = seen[:, tp_pos]  # TP + FP + ignored up to each true positive
    if len(ignored_pos):
        ignored = np.concatenate([np.zeros((len(det_weights), 1)),
                                  np.cumsum(det_weights[:, ignored_pos], axis=1)], axis=1)
        counted = counted - ignored[:, np.searchsorted(ignored_pos, tp_pos, side="right")]
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = tpc / npos[:, None]
        prec = tpc / np.maximum(counted, _EPS)
    if use_07_metric:
        ap = np.zeros(len(rec))
        for t in np.arange(0.0, 1.1, 0.1):
            ap = ap + np.max(np.where(rec >= t, prec, 0.0), axis=1) / 11.0
        return ap
    envelope = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    gained = np.diff(rec, axis=1, prepend=0.0)
    return np.sum(gained * envelope, axis=1)


def mean_ap(per_class):
    """``{"AP50", "AP"}`` of ``(resamples, classes, thresholds)`` per-class AP: mean over
    the classes with ground truth per threshold, then over the thresholds."""
    by_threshold = np.nanmean(per_class, axis=-2)
    return {"AP50": by_threshold[..., 0], "AP": np.mean(by_threshold, axis=-1)}


def full_set_mean_ap(per_class):
    """``{"AP50", "AP"}`` of ``(classes, thresholds)`` per-class AP, computed exactly as the
    evaluator does (``np.mean`` of 1-D arrays, so the same summation order and floats);
    classes without ground truth are left out."""
    present = ~np.isnan(per_class[:, 0])
    by_threshold = [float(np.mean(np.ascontiguousarray(per_class[present, t])))
                    for t in range(per_class.shape[1])]
    return {"AP50": by_threshold[0], "AP": float(np.mean(by_threshold))}


# --------------------------------------------------------------------------- comparing
def check_same_test_set(a: Evaluation, b: Evaluation):
    """Raise :class:`TestSetMismatchError`, saying what differs, unless ``a`` and ``b``
    were evaluated on the same images with the same ground truth, classes and metric."""
    if a.fingerprint == b.fingerprint:
        return
    problems = []
    if a.image_ids != b.image_ids:
        only_a, only_b = set(a.image_ids) - set(b.image_ids), set(b.image_ids) - set(a.image_ids)
        if only_a or only_b:
            problems.append(f"{len(only_a)} images only in A (e.g. {sorted(only_a)[:3]}), "
                            f"{len(only_b)} only in B (e.g. {sorted(only_b)[:3]})")
        else:
            problems.append("the same images in another order")
    shared = set(a.image_ids) & set(b.image_ids)
    differ = sorted(i for i in shared if a.ground_truth[i] != b.ground_truth[i])
    if differ:
        problems.append(f"other ground truth on {len(differ)} shared images (e.g. {differ[0]})")
    if a.classes != b.classes:
        problems.append(f"classes {a.classes} vs {b.classes}")
    if a.use_07_metric != b.use_07_metric:
        problems.append(f"metric {a.metric} vs {b.metric}")
    raise TestSetMismatchError(
        f"The two runs were evaluated on different test sets: A {a.path} on {a.dataset!r} "
        f"({len(a.image_ids)} images), B {b.path} on {b.dataset!r} ({len(b.image_ids)} images): "
        + "; ".join(problems or ["(their test-set fingerprints differ)"])
        + ". A paired comparison needs both runs' detections on the same test images: evaluate "
        "both on one test set (tools/train_net.py --eval-only DATASETS.TEST ...).")


def resample_weights(num_images, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED):
    """``(resamples, num_images)``: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, num_images))
    for r in range(resamples):
        weights[r] = np.bincount(rng.integers(0, num_images, size=num_images),
                                 minlength=num_images)
    return weights


def _summary(a_value, b_value, differences, confidence):
    differences = differences[~np.isnan(differences)]
    lo, hi = (np.percentile(differences, [50 * (1 - confidence), 50 * (1 + confidence)])
              if len(differences) else (math.nan, math.nan))
    p = ((np.sum(differences < 0) + 0.5 * np.sum(differences == 0)) / len(differences)
         if len(differences) else math.nan)
    return {"a": float(a_value), "b": float(b_value), "difference": float(b_value - a_value),
            "ci": [float(lo), float(hi)], "p_value": float(p),
            "resamples_used": int(len(differences))}


def compare(a: Evaluation, b: Evaluation, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED,
            confidence=0.95):
    """Paired bootstrap of B - A over test images (see the module docstring): a JSON-plain
    dict with the full-set AP50 / AP of both runs, the difference, its ``confidence``
    interval and the one-sided p-value, overall and per class."""
    check_same_test_set(a, b)
    run_a, run_b = _prepare(a), _prepare(b)
    full_a, full_b = run_a.full_set_ap(), run_b.full_set_ap()
    weights = resample_weights(len(a.image_ids), resamples, seed)
    boot_a, boot_b = run_a.resampled_ap(weights), run_b.resampled_ap(weights)
    mean_a, mean_b = full_set_mean_ap(full_a), full_set_mean_ap(full_b)
    boot_mean_a, boot_mean_b = mean_ap(boot_a), mean_ap(boot_b)
    result = {
        "run_a": a.path, "run_b": b.path,
        "test_set": {"dataset": a.dataset, "num_images": len(a.image_ids),
                     "classes": list(a.classes), "metric": a.metric,
                     "fingerprint": a.fingerprint},
        "bootstrap": {"resamples": int(resamples), "seed": int(seed), "unit": "test image",
                      "confidence": confidence,
                      "difference": "B - A (AP points)",
                      "p_value": "one-sided: share of resamples in which B does not beat A "
                                 "(ties count half); small p: B is better than A"},
        "classes_without_ground_truth": [name for c, name in enumerate(a.classes)
                                         if np.isnan(full_a[c, 0])],
    }
    for key in ("AP50", "AP"):
        result[key] = _summary(mean_a[key], mean_b[key], boot_mean_b[key] - boot_mean_a[key],
                               confidence)
    per_class = {}
    for c, name in enumerate(a.classes):
        if np.isnan(full_a[c, 0]):
            continue
        per_class[name] = {
            "AP50": _summary(full_a[c, 0], full_b[c, 0], boot_b[:, c, 0] - boot_a[:, c, 0],
                             confidence),
            "AP": _summary(np.mean(full_a[c]), np.mean(full_b[c]),
                           np.mean(boot_b[:, c], axis=-1) - np.mean(boot_a[:, c], axis=-1),
                           confidence),
        }
    result["per_class"] = per_class
    return result


def _prepare(evaluation):
    from .coco_ap import CocoEvaluation, PreparedCocoRun

    if isinstance(evaluation, CocoEvaluation):  # COCO AP (evaluation/coco_ap.py)
        return PreparedCocoRun(evaluation)
    return PreparedRun(evaluation)


def load_evaluation(path):
    """A detections file of either kind: VOC (:func:`load_detections`) or COCO
    (``"kind": "coco"``, :func:`~imagescore_det.evaluation.coco_ap.load_coco_detections`)."""
    import json

    from .coco_ap import KIND, load_coco_detections

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = None  # load_detections says what is wrong
    if isinstance(data, dict) and data.get("kind") == KIND:
        return load_coco_detections(path, data)
    return load_detections(path)


def compare_files(path_a, path_b, **kwargs):
    return compare(load_evaluation(path_a), load_evaluation(path_b), **kwargs)


def format_markdown(result, name_a="A", name_b="B"):
    """The comparison as Markdown: the headline numbers and the per-class table."""
    boot, test = result["bootstrap"], result["test_set"]
    pct = f"{100 * boot['confidence']:g}%"

    def row(label, s):
        return (f"| {label} | {s['a']:.2f} | {s['b']:.2f} | {s['difference']:+.2f} | "
                f"[{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}] | {s['p_value']:.3f} |")

    header = (f"| | {name_a} | {name_b} | {name_b} − {name_a} | {pct} interval | "
              f"p ({name_b} not better) |\n|---|---|---|---|---|---|")
    lines = [
        f"## {name_b} vs {name_a}: paired bootstrap over test images", "",
        f"* A ({name_a}): `{result['run_a']}`", f"* B ({name_b}): `{result['run_b']}`",
        f"* test set: `{test['dataset']}`, {test['num_images']} images, {test['metric']} AP; "
        f"{boot['resamples']} resamples of the test images (seed {boot['seed']}), both runs "
        "on the same resamples",
        f"* p: {boot['p_value']}", "", header,
        row("AP50", result["AP50"]), row("AP (0.50:0.95)", result["AP"]), "",
        "### Per class", "",
        (f"| class | AP50 {name_a} | AP50 {name_b} | Δ AP50 | {pct} interval | p | "
         f"AP {name_a} | AP {name_b} | Δ AP | {pct} interval |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["per_class"].items():
        s50, sap = s["AP50"], s["AP"]
        lines.append(f"| {name} | {s50['a']:.2f} | {s50['b']:.2f} | {s50['difference']:+.2f} | "
                     f"[{s50['ci'][0]:+.2f}, {s50['ci'][1]:+.2f}] | {s50['p_value']:.3f} | "
                     f"{sap['a']:.2f} | {sap['b']:.2f} | {sap['difference']:+.2f} | "
                     f"[{sap['ci'][0]:+.2f}, {sap['ci'][1]:+.2f}] |")
    if result["classes_without_ground_truth"]:
        lines += ["", "Classes without ground truth in the test set (no AP, left out): "
                  + ", ".join(result["classes_without_ground_truth"])]
    return "\n".join(lines) + "\n"
