"""COCO-style box AP from a detections file, as pycocotools' COCOeval computes it (plain NumPy).

:class:`~imagescore_det.evaluation.coco.PerClassCOCOEvaluator` writes
``<output_dir>/detections_<dataset>.json`` for a COCO json test set (the name the VOC
evaluator uses, so ``tools/compare_runs.py`` finds either), with ``"kind": "coco"``:

* ``image_ids``: the test json's image ids, sorted (COCOeval's ``params.imgIds``);
* ``categories``: the json's category ids in class order (``classes``);
* ``ground_truth``: per image id (as a string), ``[category_id, iscrowd, x, y, w, h, area]``
  of every annotation, in the json's order;
* ``detections``: ``[image_id, category_id, score, x, y, w, h]`` of every detection, as
  COCOEvaluator wrote them to ``coco_instances_results.json``.

:func:`coco_ap` recomputes COCOeval's bbox numbers on area "all" with 100 detections per
image (AP, AP50, AP75 and per class): the same greedy matching (crowd boxes matched by
intersection over the detection's area and ignored, a detection matched to one counts
neither way), the same stable score order, the 101 recall thresholds and the precision
envelope; the tests check it against COCOeval. :class:`PreparedCocoRun` gives
:mod:`~imagescore_det.evaluation.bootstrap` the per-class AP of resampled test sets (an
image drawn k times: its detections and ground truth counted k times, its detections' copies
next to each other in the score order).
"""
import hashlib
import json
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .detections import DetectionsFileError

KIND = "coco"
FORMAT_VERSION = 1
MAX_DETS = 100
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_EPS = np.spacing(1)


def coco_fingerprint(image_ids, ground_truth, categories):
    text = json.dumps([list(image_ids), [ground_truth[str(i)] for i in image_ids],
                       list(categories), KIND], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def detections_record(dataset_name, gt_json, results):
    """The detections file's content from the test set's COCO json (a dict) and
    COCOEvaluator's results list (``coco_instances_results.json``)."""
    cats = sorted(gt_json["categories"], key=lambda c: c["id"])
    image_ids = sorted({int(im["id"]) for im in gt_json["images"]})
    ground_truth = {str(i): [] for i in image_ids}
    for a in gt_json["annotations"]:
        if str(a["image_id"]) in ground_truth:
            ground_truth[str(a["image_id"])].append(
                [int(a["category_id"]), int(a.get("iscrowd", 0)), *map(float, a["bbox"]),
                 float(a["area"]) if "area" in a else float(a["bbox"][2] * a["bbox"][3])])
    detections = [[int(r["image_id"]), int(r["category_id"]), float(r["score"]),
                   *map(float, r["bbox"])] for r in results]
    categories = [int(c["id"]) for c in cats]
    return {"format_version": FORMAT_VERSION, "kind": KIND, "dataset": dataset_name,
            "classes": [c["name"] for c in cats], "categories": categories,
            "image_ids": image_ids, "ground_truth": ground_truth, "detections": detections,
            "test_set_fingerprint": coco_fingerprint(image_ids, ground_truth, categories)}


@dataclass
class CocoEvaluation:
    """A loaded COCO detections file (the interface of
    :class:`~imagescore_det.evaluation.detections.Evaluation` that the bootstrap reads)."""

    path: str
    dataset: str
    classes: List[str]
    categories: List[int]
    image_ids: List[str]
    ground_truth: Dict[str, list]
    detections: list
    fingerprint: str
    use_07_metric: bool = False
    metric = "COCO (COCOeval, area all, 100 detections per image)"


def load_coco_detections(path, data):
    """:class:`CocoEvaluation` of a parsed detections file ``data`` of kind coco."""
    fix = ("Evaluate the run again (tools/train_net.py --eval-only with its config and "
           "MODEL.WEIGHTS model_final.pth), which writes inference/detections_<dataset>.json.")
    missing = [k for k in ("dataset", "classes", "categories", "image_ids", "ground_truth",
                           "detections") if k not in data]
    if missing or data.get("format_version") != FORMAT_VERSION:
        raise DetectionsFileError(f"The COCO detections file {path} lacks {missing} or is of "
                                  f"another format version. {fix}")
    image_ids = [str(i) for i in data["image_ids"]]
    if set(data["ground_truth"]) != set(image_ids):
        raise DetectionsFileError(f"The detections file {path} is inconsistent: its ground truth "
                                  f"does not cover exactly its image ids. {fix}")
    return CocoEvaluation(path=path, dataset=data["dataset"], classes=list(data["classes"]),
                          categories=[int(c) for c in data["categories"]], image_ids=image_ids,
                          ground_truth=data["ground_truth"], detections=data["detections"],
                          fingerprint=coco_fingerprint(data["image_ids"], data["ground_truth"],
                                                       data["categories"]))


def box_iou(dt, gt, crowd):
    """pycocotools' ``bbIou`` (maskApi.c, the same operations): ``(len(dt), len(gt))``."""
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    w = (np.minimum(dt[:, None, 2] + dt[:, None, 0], gt[None, :, 2] + gt[None, :, 0])
         - np.maximum(dt[:, None, 0], gt[None, :, 0]))
    h = (np.minimum(dt[:, None, 3] + dt[:, None, 1], gt[None, :, 3] + gt[None, :, 1])
         - np.maximum(dt[:, None, 1], gt[None, :, 1]))
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    da, ga = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    union = np.where(np.asarray(crowd, bool)[None, :], da[:, None],
                     da[:, None] + ga[None, :] - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def _match_image(dets, gts):
    """COCOeval.evaluateImg for one image and category: (scores, matched (T, n), ignored
    (T, n)) of its top ``MAX_DETS`` detections in score order, and its non-ignored gt count."""
    crowd = np.array([g[1] for g in gts], dtype=bool)
    gt_order = np.argsort(crowd.astype(int), kind="mergesort")
    gts = [gts[i] for i in gt_order]
    crowd = crowd[gt_order]
    dt_order = np.argsort([-d[2] for d in dets], kind="mergesort")[:MAX_DETS]
    dets = [dets[i] for i in dt_order]
    ious = box_iou([d[3:7] for d in dets], [g[2:6] for g in gts], crowd)
    T = len(IOU_THRESHOLDS)
    matched, ignored = np.zeros((T, len(dets)), bool), np.zeros((T, len(dets)), bool)
    for t, thresh in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gts), bool)
        for d in range(len(dets)):
            best, m = min(thresh, 1 - 1e-10), -1
            for g in range(len(gts)):
                if taken[g] and not crowd[g]:
                    continue
                if m > -1 and not crowd[m] and crowd[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue
            ignored[t, d] = crowd[m]
            matched[t, d] = True
            taken[m] = True
    return np.array([d[2] for d in dets], dtype=np.float64), matched, ignored, int((~crowd).sum())


@dataclass
class _CocoCurve:
    image_index: np.ndarray  # (n,) sorted detections' image positions
    tp: np.ndarray           # (T, n) bool
    fp: np.ndarray           # (T, n) bool
    npig: np.ndarray         # (num_images,) non-ignored ground truth per image


def _precision_at_recalls(tp, fp, npig):
    """COCOeval.accumulate for one class and threshold: the 101 interpolated precisions."""
    q = np.zeros(len(RECALL_THRESHOLDS))
    if len(tp) == 0:
        return q
    tp_sum, fp_sum = np.cumsum(tp).astype(float), np.cumsum(fp).astype(float)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + _EPS)
    pr = np.maximum.accumulate(pr[::-1])[::-1]
    inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
    valid = inds < len(pr)
    q[valid] = pr[inds[valid]]
    return q


class PreparedCocoRun:
    """One run's detections matched once per image; AP of the full set or of resamples."""

    def __init__(self, evaluation: CocoEvaluation):
        self.evaluation = evaluation
        position = {str(i): k for k, i in enumerate(evaluation.image_ids)}
        by_key = {}
        for det in evaluation.detections:
            by_key.setdefault((str(det[0]), int(det[1])), []).append(det)
        self.curves = []
        n = len(evaluation.image_ids)
        for cat in evaluation.categories:
            scores, matched, ignored, images = [], [], [], []
            npig = np.zeros(n, dtype=np.int64)
            for image_id in evaluation.image_ids:
                gts = [[g[0], g[1], *g[2:6]] for g in evaluation.ground_truth[image_id]
                       if int(g[0]) == cat]
                dets = by_key.get((image_id, cat), [])
                if not gts and not dets:
                    continue
                s, m, ig, count = _match_image(dets, gts)
                npig[position[image_id]] = count
                scores.append(s), matched.append(m), ignored.append(ig)
                images.append(np.full(len(s), position[image_id]))
            T = len(IOU_THRESHOLDS)
            if scores:
                s = np.concatenate(scores)
                order = np.argsort(-s, kind="mergesort")
                m = np.concatenate(matched, axis=1)[:, order]
                ig = np.concatenate(ignored, axis=1)[:, order]
                idx = np.concatenate(images)[order]
            else:
                m = ig = np.zeros((T, 0), bool)
                idx = np.zeros(0, np.int64)
            self.curves.append(_CocoCurve(idx, m & ~ig, ~m & ~ig, npig))

    def full_set_ap(self):
        """``(classes, thresholds)`` AP in points (NaN: no ground truth)."""
        out = np.full((len(self.curves), len(IOU_THRESHOLDS)), np.nan)
        for c, curve in enumerate(self.curves):
            total = curve.npig.sum()
            if total == 0:
                continue
            for t in range(len(IOU_THRESHOLDS)):
                out[c, t] = 100 * np.mean(_precision_at_recalls(curve.tp[t], curve.fp[t], total))
        return out

    def resampled_ap(self, weights):
        """``(resamples, classes, thresholds)`` AP of each resample (``weights``: how often
        each image is drawn), the copies of a detection next to each other."""
        weights = np.asarray(weights).astype(np.int64)
        out = np.full((len(weights), len(self.curves), len(IOU_THRESHOLDS)), np.nan)
        for c, curve in enumerate(self.curves):
            for r, w in enumerate(weights):
                total = int(np.dot(w, curve.npig))
                if total == 0:
                    continue
                repeat = w[curve.image_index]
                for t in range(len(IOU_THRESHOLDS)):
                    out[r, c, t] = 100 * np.mean(_precision_at_recalls(
                        np.repeat(curve.tp[t], repeat), np.repeat(curve.fp[t], repeat), total))
        return out


def coco_ap(evaluation: CocoEvaluation):
    """``{"AP", "AP50", "AP75", "per_class": {name: {"AP", "AP50", "AP75"}}}`` (points), as
    COCOeval's summarize (area all, 100 detections) and Detectron2's per-class AP."""
    per_class = PreparedCocoRun(evaluation).full_set_ap()
    present = ~np.isnan(per_class[:, 0])
    t75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
    out = {"AP": float(np.mean(per_class[present])) if present.any() else float("nan"),
           "AP50": float(np.mean(per_class[present, 0])) if present.any() else float("nan"),
           "AP75": float(np.mean(per_class[present, t75])) if present.any() else float("nan")}
    out["per_class"] = {name: {"AP": float(np.mean(per_class[c])), "AP50": float(per_class[c, 0]),
                               "AP75": float(per_class[c, t75])}
                        for c, name in enumerate(evaluation.classes) if present[c]}
    return out
