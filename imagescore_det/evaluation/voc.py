"""Pascal VOC evaluation with per-class AP, on top of Detectron2's evaluator."""
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict

import numpy as np
from tabulate import tabulate

from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..utils import atomic_write_json
from .detections import detections_path, write_detections

logger = logging.getLogger(__name__)


def ap50_of(results):
    """AP50 of ``DefaultTrainer.test``'s results: ``{"bbox": ...}``, or ``{dataset: {"bbox":
    ...}}`` for several test datasets (the first is reported); None when there are none."""
    if not results:
        return None
    if "bbox" not in results:
        results = next(iter(results.values()))
    return results.get("bbox", {}).get("AP50")


class PerClassVOCEvaluator(PascalVOCDetectionEvaluator):
    """:class:`PascalVOCDetectionEvaluator` that also reports AP50 (and AP) of every class.

    The returned ``results["bbox"]`` holds Detectron2's ``AP``, ``AP50`` and ``AP75`` plus
    ``AP50-<class>`` for each class (the naming of Detectron2's COCO evaluator). The per-class
    table is logged, and written to ``<output_dir>/voc_per_class_<dataset>.json`` when an
    ``output_dir`` is given, with every detection and the ground truth in
    ``<output_dir>/detections_<dataset>.json`` (for paired comparisons of runs:
    :mod:`~imagescore_det.evaluation.bootstrap`, ``tools/compare_runs.py``). AP is computed exactly as Detectron2 does (same ``voc_eval``,
    same 07/12 metric switch), so ``AP``/``AP50``/``AP75`` equal the parent's numbers.
    """

    def __init__(self, dataset_name, output_dir=None):
        super().__init__(dataset_name)
        self._output_dir = output_dir

    def evaluate(self):
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return
        predictions = defaultdict(list)
        for predictions_per_rank in all_predictions:
            for clsid, lines in predictions_per_rank.items():
                predictions[clsid].extend(lines)
        del all_predictions
        # voc_eval caches parsed XML by file name; a re-generated dataset must be re-read.
        parse_rec.cache_clear()

        logger.info("Evaluating %s using %s metric.", self._dataset_name,
                    2007 if self._is_2007 else 2012)
        aps = defaultdict(list)  # iou threshold -> AP of each class
        with tempfile.TemporaryDirectory(prefix="pascal_voc_eval_") as dirname:
            res_file_template = os.path.join(dirname, "{}.txt")
            for cls_id, cls_name in enumerate(self._class_names):
                lines = predictions.get(cls_id, [""])
                with open(res_file_template.format(cls_name), "w") as f:
                    f.write("\n".join(lines))
                for thresh in range(50, 100, 5):
                    _, _, ap = voc_eval(res_file_template, self._anno_file_template,
                                        self._image_set_path, cls_name,
                                        ovthresh=thresh / 100.0, use_07_metric=self._is_2007)
                    aps[thresh].append(ap * 100)

        mean_ap = {iou: float(np.mean(x)) for iou, x in aps.items()}
        bbox = OrderedDict(AP=float(np.mean(list(mean_ap.values()))), AP50=mean_ap[50],
                           AP75=mean_ap[75])
        per_class = OrderedDict()
        for i, name in enumerate(self._class_names):
            per_class[name] = {
                "AP50": float(aps[50][i]),
                "AP75": float(aps[75][i]),
                "AP": float(np.mean([aps[t][i] for t in aps])),
            }
            bbox[f"AP50-{name}"] = per_class[name]["AP50"]
        table = tabulate([(n, f"{v['AP50']:.2f}", f"{v['AP']:.2f}") for n, v in per_class.items()],
                         headers=["category", "AP50", "AP"], tablefmt="pipe")
        logger.info("Per-category AP on %s:\n%s", self._dataset_name, table)
        if self._output_dir:
            path = os.path.join(self._output_dir, f"voc_per_class_{self._dataset_name}.json")
            PathManager.mkdirs(self._output_dir)
            atomic_write_json(path, {"dataset": self._dataset_name, "mean": dict(
                AP=bbox["AP"], AP50=bbox["AP50"], AP75=bbox["AP75"]), "per_class": per_class})
            write_detections(detections_path(self._output_dir, self._dataset_name),
                             self._dataset_name, self._class_names, self._image_set_path,
                             self._anno_file_template, self._is_2007, predictions)
        return OrderedDict(bbox=bbox)
