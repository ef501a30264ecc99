"""Pseudo-labeled datasets: predictions -> Detectron2 dataset dicts, on disk and registered."""
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils import atomic_write_json, read_json_object
from .pseudo_check import PseudoDatasetError, check_pseudo_data

PSEUDO_FORMAT_VERSION = 1


def pseudo_dataset_name(unlabeled_datasets, round_index):
    """``voc_2012_trainval`` + round 1 -> ``voc_2012_trainval_pseudo_r1``."""
    return "+".join(unlabeled_datasets) + f"_pseudo_r{round_index}"


def class_agnostic_nms(prediction, iou_thresh):
    """One prediction ({boxes, scores, classes}, numpy) with overlapping boxes of *any* class
    suppressed (Detectron2's test-time NMS is per class, so one object can come out as two
    boxes of different classes). The kept boxes stay in descending score order."""
    import torch
    from torchvision.ops import nms

    boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return prediction
    keep = nms(torch.as_tensor(boxes), torch.as_tensor(np.asarray(prediction["scores"],
                                                                 dtype=np.float64)),
               float(iou_thresh)).numpy()
    return {key: np.asarray(value)[keep] for key, value in prediction.items()}


def predictions_to_dicts(pool_dicts, predictions, score_thresh, min_boxes):
    """Turn per-image predictions into dataset dicts with pseudo annotations.

    Args:
        pool_dicts: the unlabeled images' dataset dicts (their "annotations", if any, are
            dropped: pseudo dicts never carry the pool's true labels).
        predictions: one dict per image with numpy/list "boxes" (XYXY_ABS, original image
            coordinates), "scores" and "classes".
        score_thresh: boxes scoring below this are not kept.
        min_boxes: images left with fewer boxes are dropped (0 keeps every image; an image
            kept with no box trains as all-background).

    Returns:
        (kept dicts, number of boxes kept per input image)
    """
    out, counts = [], []
    for d, p in zip(pool_dicts, predictions):
        anns = [
            {"bbox": [float(v) for v in box], "bbox_mode": BoxMode.XYXY_ABS,
             "category_id": int(c), "score": float(s)}
            for box, s, c in zip(p["boxes"], p["scores"], p["classes"]) if s >= score_thresh
        ]
        counts.append(len(anns))
        if len(anns) < min_boxes:
            continue
        nd = {k: v for k, v in d.items() if k not in ("annotations", "pool_index")}
        nd["annotations"] = anns
        out.append(nd)
    return out, counts


def save_pseudo_dataset(path, dicts, extra=None):
    """Write the pseudo dataset (Detectron2 dataset-dict form) atomically as JSON."""
    def plain(d):
        d = dict(d)
        d["annotations"] = [dict(a, bbox_mode=int(a["bbox_mode"])) for a in d["annotations"]]
        return d

    atomic_write_json(path, {"format_version": PSEUDO_FORMAT_VERSION, **(extra or {}),
                             "dataset_dicts": [plain(d) for d in dicts]}, indent=None)


def load_pseudo_dataset(path, num_classes=None):
    """Read a file written by :func:`save_pseudo_dataset`; returns (dicts, header).

    Its structure is checked (``data.pseudo_check``; category ids against ``num_classes``
    when given): a damaged or edited file raises :class:`PseudoDatasetError`.
    """
    data = read_json_object(path, "the pseudo-label dataset",
                            "Delete its round folder to recompute the selection.",
                            PseudoDatasetError)
    if data.get("format_version") != PSEUDO_FORMAT_VERSION:
        raise PseudoDatasetError(
            f"{path} has pseudo-label format {data.get('format_version')}, this version reads "
            f"{PSEUDO_FORMAT_VERSION}. Delete its round folder to recompute the selection.")
    check_pseudo_data(data, path, num_classes)
    dicts = data.pop("dataset_dicts")
    for d in dicts:
        for a in d["annotations"]:
            a["bbox_mode"] = BoxMode(a["bbox_mode"])
    return dicts, data


def register_pseudo_dataset(name, dicts, like_dataset):
    """Register ``dicts`` as ``name`` with the class names of ``like_dataset``.

    Re-registering a name (a refresh round, or a resumed run) replaces it.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    frozen = [dict(d) for d in dicts]
    DatasetCatalog.register(name, lambda: [dict(d) for d in frozen])
    meta = MetadataCatalog.get(like_dataset)
    MetadataCatalog.get(name).set(thing_classes=list(meta.thing_classes), pseudo_labeled=True,
                                  source_datasets=like_dataset)
    return name
