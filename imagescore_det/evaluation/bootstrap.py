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
the test set (or in a resample) is scored as ``voc_eval`` scores it there and counted in the
mean, as the evaluator's AP50 counts it: 0 with the VOC2007 11-point metric; with the area
metric 0 when no detection of the class is drawn, else NaN (``voc_eval``'s recall 0/0, which
makes the evaluator's own mean NaN too; such a resample is left out of the interval).

Over several seeds (:func:`seed_image_bootstrap`, for benchmarks): each seed's arms (e.g.
supervised-only, a selector, the oracle, branched from one checkpoint) on one test set; each
resample draws the seeds with replacement and the test images with replacement (one image
draw shared by the seeds), and averages each arm's AP over the drawn seeds, so a contrast's
interval (:func:`seed_gain`, :func:`seed_share_of_gain`) includes the seed-to-seed spread.
With one seed it is the paired bootstrap above, resample for resample.

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
        Detectron2's voc_eval * 100, a class without ground truth included (voc_eval's
        recall 0/0: 0 with the 11-point metric; with the area metric NaN when the class has
        detections, else 0)."""
        out = np.full((len(self.curves), len(IOU_THRESHOLDS)), np.nan)
        for c, curve in enumerate(self.curves):
            npos = int(self.npos[c].sum())
            for t in range(len(IOU_THRESHOLDS)):
                tp, fp = np.cumsum(curve.tp[t]), np.cumsum(curve.fp[t])
                with np.errstate(invalid="ignore", divide="ignore"):  # npos 0, as voc_eval
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
            # no ground truth drawn: voc_eval's recall is 0/0 (see full_set_ap)
            drawn = weights @ np.bincount(curve.image_index, minlength=weights.shape[1])
            no_truth = npos == 0
            out[no_truth, c, :] = np.where(
                (drawn[no_truth] > 0) & (not self.evaluation.use_07_metric), np.nan, 0.0)[:, None]
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
    every class per threshold (a class without ground truth included, as the evaluator
    counts it), then over the thresholds."""
    by_threshold = np.mean(per_class, axis=-2)
    return {"AP50": by_threshold[..., 0], "AP": np.mean(by_threshold, axis=-1)}


def full_set_mean_ap(per_class):
    """``{"AP50", "AP"}`` of ``(classes, thresholds)`` per-class AP, computed exactly as the
    evaluator does (``np.mean`` of 1-D arrays, so the same summation order and floats), over
    every class: one without ground truth counts as voc_eval scores it (see full_set_ap)."""
    by_threshold = [float(np.mean(np.ascontiguousarray(per_class[:, t])))
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
    return _draw_weights(np.random.default_rng(seed), num_images, resamples)


def _draw_weights(rng, num_items, resamples):
    weights = np.zeros((resamples, num_items))
    for r in range(resamples):
        weights[r] = np.bincount(rng.integers(0, num_items, size=num_items),
                                 minlength=num_items)
    return weights


def _interval(values, confidence):
    """The central ``confidence`` percentile interval of ``values`` (NaN when empty)."""
    if not len(values):
        return math.nan, math.nan
    lo, hi = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def _summary(a_value, b_value, differences, confidence):
    differences = differences[~np.isnan(differences)]
    lo, hi = _interval(differences, confidence)
    p = ((np.sum(differences < 0) + 0.5 * np.sum(differences == 0)) / len(differences)
         if len(differences) else math.nan)
    return {"a": float(a_value), "b": float(b_value), "difference": float(b_value - a_value),
            "ci": [float(lo), float(hi)], "p_value": float(p),
            "resamples_used": int(len(differences))}


def _without_truth(run, full):
    """Indices of the classes without ground truth in the test set: from the VOC run's
    positives, or (a COCO run) the classes COCOeval gives no AP (NaN)."""
    npos = getattr(run, "npos", None)
    if npos is None:
        return [c for c in range(len(full)) if np.isnan(full[c, 0])]
    return [c for c in range(len(npos)) if npos[c].sum() == 0]


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
        # VOC: scored as voc_eval scores them (0 with the 11-point metric) and in the means;
        # COCO: left out of the means, as COCOeval leaves them out
        "classes_without_ground_truth": [a.classes[c] for c in _without_truth(run_a, full_a)],
    }
    for key in ("AP50", "AP"):
        result[key] = _summary(mean_a[key], mean_b[key], boot_mean_b[key] - boot_mean_a[key],
                               confidence)
    per_class = {}
    for c, name in enumerate(a.classes):
        if name in result["classes_without_ground_truth"]:
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


# --------------------------------------------------------------------------- over seeds
def seed_image_weights(num_seeds, num_images, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED):
    """The two-level resamples: ``(image_weights, seed_weights)``, ``(resamples, num_images)``
    and ``(resamples, num_seeds)``, how often each test image and each seed is drawn in each
    resample (both with replacement).

    One image draw serves every seed drawn in a resample: the seeds' runs are evaluated on
    the same test images, so an image's effect on them is shared and is drawn once, as it was
    measured once (independent draws per seed would average it away, as if each seed had its
    own test set). The image draws come first from the random stream, so with one seed they
    are :func:`resample_weights`' rows exactly and the seed level is a no-op."""
    rng = np.random.default_rng(seed)
    images = _draw_weights(rng, num_images, resamples)
    return images, _draw_weights(rng, num_seeds, resamples)


def mean_over_drawn_seeds(per_seed, seed_weights):
    """``(resamples,)``: per resample, the mean of ``per_seed`` ``(num_seeds, resamples)``
    over the seeds drawn (a seed drawn k times counts k times). NaN where a drawn seed's
    value is NaN; an undrawn seed's value is not looked at."""
    per_seed = np.asarray(per_seed, dtype=float)
    drawn = seed_weights.T > 0
    total = np.sum(np.where(drawn, per_seed, 0.0) * seed_weights.T, axis=0)
    total[np.any(drawn & np.isnan(per_seed), axis=0)] = np.nan
    return total / seed_weights.shape[1]


def seed_image_bootstrap(runs, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED):
    """Two-level bootstrap of several arms over seeds and test images.

    ``runs``: one ``{arm name: Evaluation}`` per seed (the same arms for every seed: a
    seed's arms are paired, e.g. branched from one round checkpoint), all evaluated on one
    test set. Each resample draws the seeds with replacement and the test images with
    replacement (:func:`seed_image_weights`), recomputes every drawn run's VOC AP on the
    drawn images and averages over the drawn seeds, every arm on the same draws: any
    contrast of arms (a difference, a share of a gain) computed resample by resample then
    varies with the seed-to-seed spread as well as with the test-image sampling.

    Returns ``{"arms", "num_seeds", "test_set", "full", "boot", "resamples", "seed"}``:
    ``full[arm][key]`` the ``(num_seeds,)`` full-set AP of each seed's run (``key``: AP50,
    AP), ``boot[arm][key]`` the ``(resamples,)`` mean over the drawn seeds.
    """
    if not runs:
        raise ValueError("seed_image_bootstrap needs the runs of at least one seed.")
    arms = list(runs[0])
    for i, by_arm in enumerate(runs):
        if list(by_arm) != arms:
            raise ValueError(f"Seed #{i} has the arms {list(by_arm)}, seed #0 {arms}: every "
                             "seed needs the same arms.")
    first = runs[0][arms[0]]
    for by_arm in runs:
        for evaluation in by_arm.values():
            check_same_test_set(first, evaluation)
    image_weights, seed_weights = seed_image_weights(len(runs), len(first.image_ids),
                                                     resamples, seed)
    full = {arm: {"AP50": [], "AP": []} for arm in arms}
    per_seed = {arm: {"AP50": [], "AP": []} for arm in arms}
    for by_arm in runs:
        for arm, evaluation in by_arm.items():
            prepared = PreparedRun(evaluation)
            whole, boot = full_set_mean_ap(prepared.full_set_ap()), mean_ap(
                prepared.resampled_ap(image_weights))
            for key in ("AP50", "AP"):
                full[arm][key].append(whole[key])
                per_seed[arm][key].append(boot[key])
    return {"arms": arms, "num_seeds": len(runs), "resamples": int(resamples), "seed": int(seed),
            "test_set": {"dataset": first.dataset, "num_images": len(first.image_ids),
                         "metric": first.metric, "fingerprint": first.fingerprint},
            "full": {arm: {k: np.array(v) for k, v in d.items()} for arm, d in full.items()},
            "boot": {arm: {k: mean_over_drawn_seeds(v, seed_weights) for k, v in d.items()}
                     for arm, d in per_seed.items()}}


def seed_gain(result, base, arm, key="AP50", confidence=0.95):
    """``arm`` - ``base`` from :func:`seed_image_bootstrap`'s ``result``: the mean over the
    seeds of the full-set difference, its ``confidence`` interval over seeds and test images,
    the one-sided p (share of resamples where ``arm`` does not beat ``base``, ties half) and
    the per-seed differences."""
    a, b = result["full"][base][key], result["full"][arm][key]
    out = _summary(np.mean(a), np.mean(b), result["boot"][arm][key] - result["boot"][base][key],
                   confidence)
    out["per_seed"] = [float(v) for v in b - a]
    return out


def seed_share_of_gain(result, base, arm, reference, key="AP50", confidence=0.95):
    """The share of ``reference``'s gain over ``base`` that ``arm`` recovers,
    ``(arm - base) / (reference - base)`` of the means over seeds, with its ``confidence``
    interval over seeds and test images (the ratio per resample).

    Only defined when ``reference``'s gain is distinguishable from 0 and positive (its own
    interval above 0): otherwise ``share`` and ``ci`` are None and ``undefined`` says why (a
    ratio to a gain that may be 0 is any number, not a share). Resamples where the
    reference's gain is exactly 0 are left out of the interval (``resamples_used``)."""
    ref = seed_gain(result, base, reference, key, confidence)
    out = {"reference_gain": ref["difference"], "reference_gain_ci": ref["ci"],
           "share": None, "ci": None, "undefined": None}
    if not ref["ci"][0] > 0:
        out["undefined"] = (f"{reference}'s gain over {base} ({ref['difference']:+.2f} "
                            f"{key}, {100 * confidence:g}% interval [{ref['ci'][0]:+.2f}, "
                            f"{ref['ci'][1]:+.2f}]) is not distinguishable from 0 or is "
                            "negative: there is no gain to take a share of")
        return out
    gain = seed_gain(result, base, arm, key, confidence)
    numerator = result["boot"][arm][key] - result["boot"][base][key]
    denominator = result["boot"][reference][key] - result["boot"][base][key]
    usable = (denominator != 0) & ~np.isnan(numerator) & ~np.isnan(denominator)
    ratios = numerator[usable] / denominator[usable]
    out.update(share=gain["difference"] / ref["difference"], ci=list(_interval(ratios,
                                                                                confidence)),
               resamples_used=int(usable.sum()))
    return out


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
        lines += ["", "Classes without ground truth in the test set (not in the table; scored 0 "
                  "in the means, as Detectron2's voc_eval scores them with the 11-point metric, "
                  "NaN with the area metric when a run has detections of the class): "
                  + ", ".join(result["classes_without_ground_truth"])]
    return "\n".join(lines) + "\n"
