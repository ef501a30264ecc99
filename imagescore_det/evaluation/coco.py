"""COCO json test sets: Detectron2's COCOEvaluator plus the per-class file and the detections
file that the VOC evaluator writes (evaluation/voc.py), for reports and paired comparisons."""
import json
import logging
import os
from collections import OrderedDict

import numpy as np

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..utils import atomic_write_json, atomic_write_text
from .coco_ap import detections_record
from .detections import detections_path

logger = logging.getLogger(__name__)

METRIC_NAMES = {"coco": "COCO", "pascal_voc": "VOC"}


class PerClassCOCOEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` (boxes only) that also reports AP50 and AP75 of every class.

    ``results["bbox"]`` holds COCOEvaluator's ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``,
    ``APl`` and ``AP-<class>``, plus ``AP50-<class>`` (as the VOC evaluator). With an
    ``output_dir`` it writes ``coco_per_class_<dataset>.json`` (the form of
    ``voc_per_class_<dataset>.json``: ``dataset``, ``metric``, ``mean``, ``per_class``
    {class: {AP50, AP75, AP}}) and ``detections_<dataset>.json`` (``evaluation/coco_ap.py``)
    for ``tools/compare_runs.py``.
    """

    def __init__(self, dataset_name, output_dir=None):
        super().__init__(dataset_name, tasks=("bbox",), output_dir=output_dir)
        self._per_class = None

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type != "bbox" or coco_eval is None or not class_names:
            return results
        precisions = coco_eval.eval["precision"]  # (iou, recall, class, area, max dets)
        per_class = OrderedDict()
        for idx, name in enumerate(class_names):
            def ap(thresholds):
                p = precisions[thresholds, :, idx, 0, -1]
                p = p[p > -1]
                return float(np.mean(p) * 100) if p.size else float("nan")

            per_class[name] = {"AP50": ap(0), "AP75": ap(5), "AP": ap(slice(None))}
            results[f"AP50-{name}"] = per_class[name]["AP50"]
        self._per_class = per_class
        return results

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        if not comm.is_main_process() or not self._output_dir or not results:
            return results
        bbox = results.get("bbox", {})
        name = self._metadata.name
        atomic_write_json(os.path.join(self._output_dir, f"coco_per_class_{name}.json"), {
            "dataset": name, "metric": "COCO (COCOeval; AP = mean over IoU 0.50:0.95)",
            "mean": {k: _plain(bbox.get(k)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
            "per_class": {c: {k: _plain(v) for k, v in aps.items()}
                          for c, aps in (self._per_class or {}).items()}})
        results_file = os.path.join(self._output_dir, "coco_instances_results.json")
        with PathManager.open(results_file) as f:
            detections = json.load(f)
        with PathManager.open(self._metadata.json_file) as f:
            gt_json = json.load(f)
        record = detections_record(name, gt_json, detections)
        atomic_write_text(detections_path(self._output_dir, name),
                          json.dumps(record, separators=(",", ":")) + "\n")
        return results


def _plain(value):
    """NaN (no object of that size / class) as null, so the file is strict JSON."""
    return None if value is None or value != value else float(value)


def metric_name(dataset_name):
    """"COCO" or "VOC": what the evaluator of a registered test set reports."""
    from detectron2.data import MetadataCatalog

    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    return METRIC_NAMES.get(kind, str(kind))
