"""Quality of pseudo-labels against the pool's true boxes (when they are known)."""
import numpy as np


def box_iou(a, b):
    """IoU matrix of (N, 4) and (M, 4) XYXY boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, iou_thresh=0.5):
    """Greedy VOC-style matching of one image's boxes: per predicted box (in the given
    order) whether it is correct.

    Predictions are taken in decreasing score (ties in the given order); each matches the
    unmatched true box of the same class with the highest IoU >= ``iou_thresh`` (the first
    such on a tie) and is then correct; the others are wrong.
    """
    order = np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable")
    gt_classes = np.asarray(gt_classes)
    used = np.zeros(len(gt_classes), dtype=bool)
    ious = box_iou(pred_boxes, gt_boxes) if len(gt_classes) else None
    correct = np.zeros(len(order), dtype=bool)
    for i in order:
        best, best_j = iou_thresh, -1
        for j in range(len(gt_classes)):
            if not used[j] and gt_classes[j] == pred_classes[i] and ious[i, j] >= best:
                best, best_j = ious[i, j], j
        if best_j >= 0:
            used[best_j] = True
            correct[i] = True
    return correct


def match_image(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, iou_thresh=0.5):
    """(true positives, false positives, number of true boxes) of one image
    (:func:`match_boxes`)."""
    correct = match_boxes(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes,
                          iou_thresh)
    tp = int(correct.sum())
    return tp, len(correct) - tp, len(gt_classes)


def pseudo_box_correctness(pseudo_annotations, true_annotations, iou_thresh=0.5):
    """Per image, per pseudo annotation (in its order) whether it is correct."""
    return [match_boxes([a["bbox"] for a in pred], [a.get("score", 1.0) for a in pred],
                        [a["category_id"] for a in pred], [a["bbox"] for a in true],
                        [a["category_id"] for a in true], iou_thresh).tolist()
            for pred, true in zip(pseudo_annotations, true_annotations)]


def pseudo_label_quality(pseudo_annotations, true_annotations, iou_thresh=0.5):
    """Per-image (tp, fp, n_true) of pseudo annotations against true ones (XYXY_ABS lists)."""
    rows = []
    for pred, true in zip(pseudo_annotations, true_annotations):
        rows.append(match_image([a["bbox"] for a in pred], [a.get("score", 1.0) for a in pred],
                                [a["category_id"] for a in pred],
                                [a["bbox"] for a in true], [a["category_id"] for a in true],
                                iou_thresh))
    return rows


def precision_by_score_bin(scores, tps, fps, num_bins=5):
    """Pool images into equal-count bins of score; precision of the boxes in each bin.

    Returns a list of dicts (score range, images, boxes, precision) from low to high score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    bins = []
    for chunk in np.array_split(order, min(num_bins, max(1, len(order)))):
        if len(chunk) == 0:
            continue
        tp = int(np.sum(np.asarray(tps)[chunk]))
        fp = int(np.sum(np.asarray(fps)[chunk]))
        bins.append({"score_min": float(scores[chunk].min()),
                     "score_max": float(scores[chunk].max()),
                     "images": int(len(chunk)), "boxes": tp + fp,
                     "precision": tp / (tp + fp) if tp + fp else None})
    return bins


def pool_precision_analysis(scores, chosen, rows, num_bins=10):
    """Precision of the pseudo-labels every pool image would get, by its score (equal-count
    bins over the whole pool), and for the selected images against the rest.

    ``rows``: per pool image (tp, fp, n_true), e.g. from :func:`pseudo_label_quality`.
    """
    tp = np.array([r[0] for r in rows])
    fp = np.array([r[1] for r in rows])
    selected = np.zeros(len(rows), dtype=bool)
    selected[np.asarray(chosen, dtype=np.int64)] = True

    def precision(mask):
        boxes = int(tp[mask].sum() + fp[mask].sum())
        return float(tp[mask].sum()) / boxes if boxes else None

    return {"pool_precision_by_score_bin": precision_by_score_bin(scores, tp, fp, num_bins),
            "pool_precision_selected": precision(selected),
            "pool_precision_rest": precision(~selected),
            "pool_precision_all": precision(np.ones(len(rows), dtype=bool))}


def precision_of(rows):
    """``{"precision", "recall", "boxes"}`` of per-image (tp, fp, n_true) rows."""
    tp, fp, n_true = (int(sum(row[j] for row in rows)) for j in range(3))
    return {"precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / n_true if n_true else None, "boxes": tp + fp}
