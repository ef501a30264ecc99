"""The round folder ``OUTPUT_DIR/image_score/round_<k>/``: its file names, schema, writer and reader.

Everything that reads or writes a round goes through this module: the hook (resume), the
tools (``score_images.py``, ``visualize_pseudo_labels.py``) and the benchmarks.

==========================  ===========================================================
file                        content
==========================  ===========================================================
``scores.csv``              one row per pool image, in pool order (:data:`SCORES_COLUMNS`)
``pool_boxes.csv``          ``IMAGE_SCORE.ANALYZE_POOL``: one row per would-be pseudo-box
                            of every pool image (:data:`POOL_BOX_COLUMNS`)
``skipped.csv``             one row per pool image left out as unusable
                            (:data:`SKIPPED_COLUMNS`; only when there is one)
``pseudo_dataset.json``     the pseudo-labeled dataset dicts (``data.pseudo`` format)
``mask.pt``                 the fitted ``ImageScorer`` (image_score selector only)
``*.png``                   score histogram, precision by score bin (when truth is known)
``selection.json``          the :class:`RoundManifest`, written last: a round folder
                            without it is incomplete and is recomputed on resume
==========================  ===========================================================

Every file is written atomically. Manifest format versions: 1 (no ``format_version`` key;
``num_dropped_empty``, no back-fill) and 2 (``format_version``, ``num_dropped``,
``num_backfilled``, ``num_background_images``, ``seed``; ``scores.csv`` gains the
``backfilled`` / ``trained`` columns, and ``domain`` when the pool's domains are known).
Version 2 manifests may carry ``num_skipped`` (0 when absent) with ``skipped.csv``.
``scores.csv`` may carry the ``pool_`` quality columns (``IMAGE_SCORE.ANALYZE_POOL``, since
2026-11-28); readers take the columns they need by name.
"""
import csv
import dataclasses
import io
import logging
import numbers
import os
import re
from typing import Dict, List, Optional

import numpy as np

from ..data.pseudo import load_pseudo_dataset, save_pseudo_dataset
from ..utils import atomic_write_json, atomic_write_text, read_json_object
from .ranking import ranks_of

logger = logging.getLogger(__name__)

ROUND_FORMAT_VERSION = 2
MANIFEST = "selection.json"
SCORES_CSV = "scores.csv"
SKIPPED_CSV = "skipped.csv"
POOL_BOXES_CSV = "pool_boxes.csv"
PSEUDO_DATASET = "pseudo_dataset.json"
MASK = "mask.pt"
EVAL_BEFORE = "eval_before.json"
# scores.csv columns; the optional ones appear only when known
SCORES_COLUMNS = ("image_id", "file_name", "score", "rank")
SELECTION_COLUMNS = ("selected", "backfilled", "pseudo_boxes", "trained")
QUALITY_COLUMNS = ("true_positives", "false_positives", "true_boxes")
# IMAGE_SCORE.ANALYZE_POOL: the same for every pool image, selected or not
POOL_QUALITY_COLUMNS = tuple("pool_" + name for name in QUALITY_COLUMNS)
# pool_boxes.csv (IMAGE_SCORE.ANALYZE_POOL): per box that this detector would give a pool
# image as a pseudo-label, selected or not; pool_index = the image's row in scores.csv
# (0-based), confidence = the box's score, correct = 1 when it matches a true box (IoU >=
# PSEUDO_IOU_THRESH, same class, greedy by confidence)
POOL_BOX_COLUMNS = ("pool_index", "image_id", "file_name", "category_id", "confidence",
                    "correct")
# skipped.csv: phase = "data check" (trainer start), "score" (while ranking) or "pseudo-label"
SKIPPED_COLUMNS = ("image_id", "file_name", "phase", "reason")


class RoundError(RuntimeError):
    """A round folder that cannot be read; the message says why and what to do."""


@dataclasses.dataclass
class RoundManifest:
    """``selection.json``: what a round did. Optional fields are None when not measured."""

    round: int
    iteration: int
    selector: str
    dataset_name: str  # the registered pseudo dataset, <unlabeled>_pseudo_r<k>
    fingerprint: str  # config_fingerprint: a resumed run reuses the round only if equal
    unlabeled_datasets: List[str]
    thing_classes: List[str]
    pool_size: int
    num_selected: int  # ceil(TOP_FRACTION * pool_size): the top of the ranking
    num_pseudo_images: int  # images trained on (>= MIN_BOXES_PER_IMAGE boxes)
    num_dropped: int  # pseudo-labeled images left with fewer boxes (not trained on)
    num_pseudo_boxes: int
    boxes_per_image: float  # mean over the pseudo-labeled images
    selected_score_mean: float  # over the images trained on
    selected_score_min: float
    pool_score_mean: float
    per_class_boxes: Dict[str, int]
    timing: Dict[str, float]  # seconds per phase; selection_total_s = the selection's cost
    pseudo_dataset: str = PSEUDO_DATASET
    format_version: int = ROUND_FORMAT_VERSION
    num_backfilled: int = 0  # IMAGE_SCORE.BACKFILL: images below the top that replaced drops
    num_background_images: int = 0  # trained on with no box (MIN_BOXES_PER_IMAGE 0)
    # pool images left out as unusable (IMAGE_SCORE.ON_BAD_IMAGE skip): rows of skipped.csv.
    # Those skipped while pseudo-labeling were ranked, so pool_size counts them too.
    num_skipped: int = 0
    seed: Optional[int] = None  # the run's seed the round used (consistency.run_seed)
    fingerprint_items: Optional[Dict[str, str]] = None  # the settings behind `fingerprint`
    mask: Optional[str] = None
    plots: Optional[List[str]] = None
    domains: Optional[Dict[str, dict]] = None  # {domain: {pool, selected, mean_score}}
    # against the pool's true boxes (never trained on), when it has them
    pseudo_precision: Optional[float] = None
    pseudo_recall: Optional[float] = None
    precision_by_score_bin: Optional[list] = None
    # IMAGE_SCORE.ANALYZE_POOL
    pool_precision_by_score_bin: Optional[list] = None
    pool_precision_selected: Optional[float] = None
    pool_precision_rest: Optional[float] = None
    pool_precision_all: Optional[float] = None
    pool_precision_by_nms: Optional[Dict[str, dict]] = None  # per_class vs class_agnostic

    def to_dict(self):
        """JSON form; optional fields that were not measured are left out."""
        out = dataclasses.asdict(self)
        return {key: value for key, value in out.items()
                if value is not None or key in _REQUIRED}

    @classmethod
    def from_dict(cls, data, path="the manifest"):
        version = data.get("format_version", 1)
        if version not in (1, ROUND_FORMAT_VERSION):
            raise RoundError(f"{path} has round format {version}; this version of imagescore-det "
                             f"reads 1 and {ROUND_FORMAT_VERSION}. Delete its round folder to "
                             "recompute the selection.")
        if version == 1:  # renamed in version 2
            data = dict(data)
            data["num_dropped"] = data.pop("num_dropped_empty", None)
        unknown = sorted(set(data) - _FIELDS)
        missing = sorted(_REQUIRED - set(data))
        if unknown or missing:
            raise RoundError(f"{path} is not a round manifest of this version (unknown keys "
                             f"{unknown}, missing keys {missing}). Delete its round folder to "
                             "recompute the selection.")
        _check_values(data, path)
        return cls(**dict(data, format_version=version))


_INT_FIELDS = ("round", "iteration", "pool_size", "num_selected", "num_pseudo_images",
               "num_dropped", "num_pseudo_boxes", "num_backfilled", "num_background_images")
_STR_FIELDS = ("selector", "dataset_name", "fingerprint")


def _check_values(data, path):
    """The values a resume relies on have their types; the file names are this folder's own
    (a hand-edited name must not make a reader open another file)."""
    def fail(what):
        raise RoundError(f"{path}: {what}. The manifest was edited or is damaged; delete its "
                         "round folder to recompute the selection (--resume recomputes it).")

    for key in _INT_FIELDS:
        value = data.get(key, 0)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            fail(f"'{key}' is {value!r}, expected a non-negative integer")
    for key in _STR_FIELDS:
        if not isinstance(data.get(key), str) or not data[key]:
            fail(f"'{key}' is {data.get(key)!r}, expected a string")
    for key in ("unlabeled_datasets", "thing_classes"):
        value = data.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            fail(f"'{key}' is {value!r}, expected a list of names")
    for key, own in (("pseudo_dataset", PSEUDO_DATASET), ("mask", MASK)):
        if key in data and data[key] not in (own, None):
            fail(f"'{key}' is {data[key]!r}; a round's file is always {own}")


_FIELDS = {f.name for f in dataclasses.fields(RoundManifest)}
_REQUIRED = {f.name for f in dataclasses.fields(RoundManifest)
             if f.default is dataclasses.MISSING}


def round_dir(output_dir, round_index):
    """``OUTPUT_DIR/image_score/round_<k>``."""
    return os.path.join(output_dir, "image_score", f"round_{round_index}")


# --------------------------------------------------------------------------- scores.csv
def scores_csv_text(dicts, scores, domains=None, result=None):
    """``scores.csv`` content: one row per image in order, rank 1 = best.

    ``result`` (a :class:`~imagescore_det.engine.round.RoundResult`) adds ``selected`` (in
    the top fraction), ``backfilled`` (pseudo-labeled in place of a dropped one),
    ``pseudo_boxes`` and ``trained`` (pseudo-labeled images only) and, when the pool's
    truth is known, the quality columns (pseudo-labeled images) and, with
    ``IMAGE_SCORE.ANALYZE_POOL``, the ``pool_`` quality columns (every image: the pseudo-labels
    this detector would give it); ``domains`` adds a ``domain`` column.
    """
    header = list(SCORES_COLUMNS)
    chosen, place = set(), {}
    if result is not None:
        header += SELECTION_COLUMNS
        chosen = {int(i) for i in result.chosen}
        place = {int(i): j for j, i in enumerate(result.examined)}
        if result.quality is not None:
            header += QUALITY_COLUMNS
        pool_quality = getattr(result, "pool_quality", None)
        if pool_quality is not None:
            header += POOL_QUALITY_COLUMNS
    if domains is not None:
        header.append("domain")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    ranks = ranks_of(scores)
    for index, image in enumerate(dicts):
        row = [image.get("image_id", index), image["file_name"], repr(float(scores[index])),
               int(ranks[index])]
        if result is not None:
            j = place.get(index)  # position among the pseudo-labeled images, None = not one
            row += [int(index in chosen), int(j is not None and index not in chosen)]
            row += ["", ""] if j is None else [result.box_counts[j], int(result.trained[j])]
            if result.quality is not None:
                row += ["", "", ""] if j is None else list(result.quality[j])
            if pool_quality is not None:
                row += list(pool_quality[index])
        if domains is not None:
            row.append(domains[index])
        writer.writerow(row)
    return buf.getvalue()


def pool_boxes_csv_text(dicts, pool_boxes):
    """``pool_boxes.csv`` content (:data:`POOL_BOX_COLUMNS`), pool order, then box order."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(POOL_BOX_COLUMNS)
    for index, (image, boxes) in enumerate(zip(dicts, pool_boxes)):
        for category, confidence, correct in boxes:
            writer.writerow([index, image.get("image_id", index), image["file_name"],
                             int(category), repr(float(confidence)), int(correct)])
    return buf.getvalue()


def read_pool_boxes_csv(path):
    """Rows of a ``pool_boxes.csv`` (pool_index, category_id, correct int; confidence float)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("pool_index", "category_id", "correct"):
            row[key] = int(row[key])
        row["confidence"] = float(row["confidence"])
    return rows


def skipped_csv_text(records):
    """``skipped.csv`` content: one row per skipped pool image (:data:`SKIPPED_COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SKIPPED_COLUMNS)
    writer.writeheader()
    for record in records:
        writer.writerow({key: record.get(key, "") for key in SKIPPED_COLUMNS})
    return buf.getvalue()


def read_skipped_csv(path):
    """Rows of a ``skipped.csv`` as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_scores_csv(path):
    """Rows of a ``scores.csv`` as dicts (score float, rank int, the rest as written)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["score"] = float(row["score"])
        row["rank"] = int(row["rank"])
    return rows


# --------------------------------------------------------------------------- writing
def write_round(directory, result, manifest, plots=True):
    """Write a :class:`~imagescore_det.engine.round.RoundResult` and its manifest.

    The manifest goes last, so an interrupted write leaves an incomplete round (recomputed
    on resume), never one that looks complete. Updates ``manifest.mask`` / ``.plots``.
    """
    os.makedirs(directory, exist_ok=True)
    atomic_write_text(os.path.join(directory, SCORES_CSV),
                      scores_csv_text(result.pool, result.scores, result.domains, result))
    if getattr(result, "skipped", None):
        atomic_write_text(os.path.join(directory, SKIPPED_CSV), skipped_csv_text(result.skipped))
    if getattr(result, "pool_boxes", None) is not None:
        atomic_write_text(os.path.join(directory, POOL_BOXES_CSV),
                          pool_boxes_csv_text(result.pool, result.pool_boxes))
    save_pseudo_dataset(os.path.join(directory, PSEUDO_DATASET), result.pseudo,
                        {"name": manifest.dataset_name, "round": manifest.round})
    if result.scorer is not None:
        result.scorer.save(os.path.join(directory, MASK))
        manifest.mask = MASK
    if plots:
        manifest.plots = _draw_plots(directory, result, manifest)
    atomic_write_json(os.path.join(directory, MANIFEST), manifest.to_dict())


def _draw_plots(directory, result, manifest):
    try:
        from ..evaluation.plots import plot_round

        groups = None
        if result.domains is not None:
            domains = np.asarray(result.domains)
            groups = {f"{group} domain": domains == group for group in sorted(set(result.domains))}
        trained = [i for i, kept in zip(result.examined, result.trained) if kept]
        return plot_round(directory, result.scores, trained, manifest.to_dict(), groups)
    except Exception as e:  # noqa: BLE001 - a plot must never lose a round
        logger.warning("Could not draw the round %d plots: %s", manifest.round, e)
        return None


# --------------------------------------------------------------------------- reading
def read_manifest(directory):
    """The round's :class:`RoundManifest`, or None when the round is incomplete."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    data = read_json_object(path, "the round manifest",
                            f"Delete {directory} to recompute the round.", RoundError)
    manifest = RoundManifest.from_dict(data, path)
    folder = re.fullmatch(r"round_(\d+)", os.path.basename(os.path.normpath(directory)))
    if folder and int(folder.group(1)) != manifest.round:
        raise RoundError(f"{path} describes round {manifest.round}, but its folder is round "
                         f"{folder.group(1)}: it was copied from another round. Delete "
                         f"{directory} to recompute the selection.")
    return manifest


def read_pseudo_dicts(directory, manifest):
    """The round's pseudo-labeled dataset dicts, checked (``data.pseudo_check``) and
    against the manifest's image and box counts."""
    path = os.path.join(directory, manifest.pseudo_dataset)
    dicts = load_pseudo_dataset(path, num_classes=len(manifest.thing_classes))[0]
    boxes = sum(len(d["annotations"]) for d in dicts)
    if (len(dicts), boxes) != (manifest.num_pseudo_images, manifest.num_pseudo_boxes):
        raise RoundError(
            f"{path} has {len(dicts)} images and {boxes} boxes, but {MANIFEST} says "
            f"{manifest.num_pseudo_images} and {manifest.num_pseudo_boxes}: one of them was "
            f"edited or comes from another round. Delete {directory} to recompute the selection.")
    return dicts


@dataclasses.dataclass
class RoundRecord:
    """A complete round read back: manifest, pseudo dicts, scores.csv rows (or None)."""

    directory: str
    manifest: RoundManifest
    pseudo: List[dict]
    scores: Optional[List[dict]]


def read_round(directory):
    """Read a complete round folder (for tools and audits); :class:`RoundError` otherwise."""
    if not os.path.isdir(directory):
        raise RoundError(f"{directory} is not a directory. Pass OUTPUT_DIR/image_score/"
                         "round_<k> of a training run.")
    manifest = read_manifest(directory)
    if manifest is None:
        raise RoundError(f"{directory} has no {MANIFEST}: incomplete round: re-run training "
                         "with --resume to finish it.")
    pseudo_path = os.path.join(directory, manifest.pseudo_dataset)
    if not os.path.isfile(pseudo_path):
        raise RoundError(f"{pseudo_path} is missing although {MANIFEST} exists; delete "
                         f"{directory} and re-run training with --resume to recompute it.")
    scores_path = os.path.join(directory, SCORES_CSV)
    scores = read_scores_csv(scores_path) if os.path.isfile(scores_path) else None
    if scores is None:
        logger.warning("%s is missing", scores_path)
    return RoundRecord(directory, manifest, read_pseudo_dicts(directory, manifest), scores)
