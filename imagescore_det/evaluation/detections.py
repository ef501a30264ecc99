"""Per-image detections of a VOC evaluation, saved so that runs can be compared later.

:class:`~imagescore_det.evaluation.voc.PerClassVOCEvaluator` writes
``<output_dir>/detections_<dataset>.json`` (atomically) next to its per-class AP file. The
file holds exactly what Detectron2's ``voc_eval`` reads, already parsed:

* ``image_ids``: the test set's image ids in the order of its image-set file;
* ``ground_truth``: per image, the objects as Detectron2's ``parse_rec`` reads them
  (``[name, difficult, xmin, ymin, xmax, ymax]``, VOC's 1-based pixel coordinates);
* ``detections``: per class, the detection lines ``voc_eval`` reads, in the same order,
  parsed the same way (``image_ids``, ``scores`` rounded to 3 decimals, ``boxes`` in VOC
  coordinates rounded to 0.1), so AP recomputed from this file equals the evaluator's;
* ``use_07_metric``: the VOC2007 11-point metric (year 2007) or the area under the curve.

:mod:`imagescore_det.evaluation.bootstrap` resamples the test images of two such files.
This module imports nothing from Detectron2 except, when writing, its ``parse_rec``.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List

from ..utils import atomic_write_text

FORMAT_VERSION = 1
FILE_PREFIX = "detections_"


class DetectionsFileError(ValueError):
    """A detections file that cannot be used (missing, unreadable, or of another format)."""


def detections_path(output_dir, dataset_name):
    return os.path.join(output_dir, f"{FILE_PREFIX}{dataset_name}.json")


def parse_lines(lines):
    """Detectron2's VOC detection lines ``"<image> <score> <x1> <y1> <x2> <y2>"`` parsed
    exactly as ``voc_eval`` parses them: (image ids, scores, boxes)."""
    rows = [line.strip().split(" ") for line in lines if line.strip()]
    return ([r[0] for r in rows], [float(r[1]) for r in rows],
            [[float(z) for z in r[2:]] for r in rows])


def write_detections(path, dataset_name, class_names, image_set_path, anno_file_template,
                     use_07_metric, predictions):
    """Write the detections file.

    Args:
        predictions: ``{class index: [detection lines]}`` as PascalVOCDetectionEvaluator
            collects them (the order of the lines is kept: it decides ties in voc_eval).
    """
    from detectron2.evaluation.pascal_voc_evaluation import parse_rec

    with open(image_set_path) as f:
        image_ids = [line.strip() for line in f.readlines()]
    ground_truth = {}
    for image_id in image_ids:
        ground_truth[image_id] = [
            [obj["name"], int(obj["difficult"]), *[int(v) for v in obj["bbox"]]]
            for obj in parse_rec(anno_file_template.format(image_id))]
    detections = {}
    for cls_id, name in enumerate(class_names):
        ids, scores, boxes = parse_lines(predictions.get(cls_id, []))
        detections[name] = {"image_ids": ids, "scores": scores, "boxes": boxes}
    record = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset_name,
        "classes": list(class_names),
        "use_07_metric": bool(use_07_metric),
        "image_ids": image_ids,
        "test_set_fingerprint": test_set_fingerprint(image_ids, ground_truth, class_names,
                                                     use_07_metric),
        "ground_truth": ground_truth,
        "detections": detections,
    }
    # compact: a full VOC07 test run holds hundreds of thousands of boxes
    atomic_write_text(path, json.dumps(record, separators=(",", ":")) + "\n")


def test_set_fingerprint(image_ids, ground_truth, classes, use_07_metric):
    """A hash of what makes two evaluations comparable image by image: the image ids (in
    order), every ground-truth object, the class list and the metric."""
    text = json.dumps([list(image_ids), [ground_truth[i] for i in image_ids], list(classes),
                       bool(use_07_metric)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    """A loaded detections file (see the module docstring)."""

    path: str
    dataset: str
    classes: List[str]
    use_07_metric: bool
    image_ids: List[str]
    ground_truth: Dict[str, list]
    detections: Dict[str, dict]
    fingerprint: str

    @property
    def metric(self):
        return "VOC2007 11-point" if self.use_07_metric else "VOC area under the curve"


def load_detections(path):
    """The :class:`Evaluation` in ``path``; :class:`DetectionsFileError` saying what is wrong
    and how to get a usable file otherwise."""
    fix = ("Evaluate the run again (tools/train_net.py --eval-only with its config and "
           "MODEL.WEIGHTS model_final.pth), which writes inference/detections_<dataset>.json.")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DetectionsFileError(f"Cannot read the detections file {path}: {e}. {fix}") from e
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise DetectionsFileError(f"{path} is not a detections file of format version "
                                  f"{FORMAT_VERSION} (found {version!r}). {fix}")
    missing = [k for k in ("dataset", "classes", "use_07_metric", "image_ids", "ground_truth",
                           "detections") if k not in data]
    if missing:
        raise DetectionsFileError(f"The detections file {path} lacks {missing}. {fix}")
    image_ids, gt = data["image_ids"], data["ground_truth"]
    if set(gt) != set(image_ids) or len(set(image_ids)) != len(image_ids):
        raise DetectionsFileError(f"The detections file {path} is inconsistent: its ground truth "
                                  "does not cover exactly its (unique) image ids. " + fix)
    known = set(image_ids)
    for name in data["classes"]:
        dets = data["detections"].get(name)
        if dets is None:
            raise DetectionsFileError(f"The detections file {path} has no entry for class "
                                      f"{name!r}. {fix}")
        n = len(dets["image_ids"])
        if len(dets["scores"]) != n or len(dets["boxes"]) != n:
            raise DetectionsFileError(f"The detections of class {name!r} in {path} have "
                                      "different numbers of image ids, scores and boxes. " + fix)
        stray = set(dets["image_ids"]) - known
        if stray:
            raise DetectionsFileError(
                f"The detections file {path} has class {name!r} detections on "
                f"{len(stray)} images that are not in its test set (e.g. {sorted(stray)[0]!r}). "
                + fix)
    return Evaluation(path=path, dataset=data["dataset"], classes=list(data["classes"]),
                      use_07_metric=bool(data["use_07_metric"]), image_ids=list(image_ids),
                      ground_truth=gt, detections=data["detections"],
                      fingerprint=test_set_fingerprint(image_ids, gt, data["classes"],
                                                       data["use_07_metric"]))


def find_detections(run, dataset=None):
    """The detections file of ``run``: the file itself, or a run's OUTPUT_DIR (its
    ``inference/detections_<dataset>.json``; ``dataset`` picks one when there are several)."""
    if os.path.isfile(run):
        return run
    if not os.path.isdir(run):
        raise DetectionsFileError(f"{run} is neither a run's output directory nor a detections "
                                  "file.")
    folder = os.path.join(run, "inference")
    found = sorted(f for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if f.startswith(FILE_PREFIX) and f.endswith(".json"))
    names = [f[len(FILE_PREFIX):-len(".json")] for f in found]
    if dataset is not None:
        if dataset not in names:
            raise DetectionsFileError(
                f"{run} has no detections on {dataset!r} (it has {names or 'none'}).")
        return detections_path(folder, dataset)
    if not found:
        raise DetectionsFileError(
            f"{run} has no per-image detections ({folder}/{FILE_PREFIX}<dataset>.json): the run "
            "predates them or its test set is not Pascal VOC. Evaluate it again with "
            "tools/train_net.py --eval-only (its config, MODEL.WEIGHTS <run>/model_final.pth, "
            f"OUTPUT_DIR {run}).")
    if len(found) > 1:
        raise DetectionsFileError(f"{run} has detections on several test sets {names}; pick "
                                  "one with --dataset.")
    return os.path.join(folder, found[0])
