"""The data check at trainer start: every dataset the config names, before the first iteration.

Roles (what the config calls the dataset) decide what a finding does:

* ``labeled`` (``DATASETS.TRAIN``, ``IMAGE_SCORE.LABELED_DATASETS``) and ``test``
  (``DATASETS.TEST``): every finding stops the run (:class:`DataCheckError`, the first ten
  findings and the fixes).
* Evaluation data: a VOC dataset in ``DATASETS.TEST`` (whatever its role) is also read
  with Detectron2's VOC evaluator's own parser (``parse_rec``), so that an annotation the
  evaluator cannot read (no ``<pose>``/``<truncated>``/``<difficult>``, a non-integer box)
  or reads with another class name than the loader (``<name>car </name>``) stops the run
  here, not at the first evaluation after the warm-up. Training data is not: the loader
  reads such files, and only the evaluator needs them strict.
* ``unlabeled`` (``IMAGE_SCORE.UNLABELED_DATASETS``, only while a selection round lies
  ahead): a bad image (:data:`~imagescore_det.data.checks.IMAGE_KINDS`) follows
  ``IMAGE_SCORE.ON_BAD_IMAGE``: ``skip`` leaves it out of the round (listed in the round's
  ``skipped.csv``), ``error`` stops. A bad box only affects the measured pseudo-label
  precision and is logged. Split and annotation problems stop the run: the pool's loader
  could not load the dataset.

The check is sharded over the ranks and all-gathered, so every rank gets the same findings
and skips the same images.
"""
import dataclasses
import logging
import os
import time

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..data.checks import (BOX_KINDS, IMAGE_KINDS, NOTE_KINDS, DataCheckError, check_dataset_dicts,
                           check_voc, format_findings, merge_reports)
from ..data.coco_checks import check_coco_json, check_image_folder
from .selectors import NO_SELECTION

logger = logging.getLogger(__name__)

ON_BAD_IMAGE_CHOICES = ("skip", "error")
MAX_LISTED = 10


def config_datasets(cfg, include_pool=True):
    """``[(name, role, config keys)]`` of every dataset ``cfg`` names; a dataset named in two
    roles gets the strictest (labeled or test over unlabeled). The pool is left out when
    ``include_pool`` is False or no selection is configured."""
    out = {}

    def add(names, role, key):
        for name in names:
            entry = out.setdefault(name, [role, []])
            if entry[0] == "unlabeled" and role != "unlabeled":
                entry[0] = role
            entry[1].append(key)

    add(cfg.DATASETS.TRAIN, "labeled", "DATASETS.TRAIN")
    add(cfg.IMAGE_SCORE.LABELED_DATASETS, "labeled", "IMAGE_SCORE.LABELED_DATASETS")
    selecting = cfg.IMAGE_SCORE.ENABLED and cfg.IMAGE_SCORE.SELECTOR != NO_SELECTION
    if include_pool and (selecting or cfg.TEACHER.ENABLED):  # the teacher's pool too
        add(cfg.IMAGE_SCORE.UNLABELED_DATASETS, "unlabeled", "IMAGE_SCORE.UNLABELED_DATASETS")
    add(cfg.DATASETS.TEST, "test", "DATASETS.TEST")
    return [(name, role, ", ".join(keys)) for name, (role, keys) in out.items()]


def evaluated(keys):
    """Whether a dataset named under ``keys`` (``config_datasets``' third field) is evaluated."""
    return "DATASETS.TEST" in keys.split(", ")


def check_registered_dataset(name, deep=False, workers=None, shard=None, evaluation=False):
    """Check a registered dataset: a VOC split (metadata ``dirname``/``split``/
    ``thing_classes``, as ``register_voc`` and Detectron2's builtin VOC datasets have) from
    its files, any other from its dataset dicts. ``evaluation``: a VOC split is also read
    with Detectron2's ``PascalVOCDetectionEvaluator``'s parser, as a test set."""
    meta = MetadataCatalog.get(name)
    if meta.get("unlabeled_folder", False):  # DATASETS.REGISTER (name, "folder", directory)
        return check_image_folder(meta.image_root, name, deep=deep, workers=workers, shard=shard)
    if meta.get("evaluator_type", None) == "coco" and meta.get("json_file", None):
        return check_coco_json(meta.json_file, meta.image_root, name, deep=deep, workers=workers,
                               shard=shard)
    dirname, split = meta.get("dirname", None), meta.get("split", None)
    classes = meta.get("thing_classes", None)
    if dirname and split and classes is not None:
        parser = None
        if evaluation:  # the parser of PascalVOCDetectionEvaluator's voc_eval, itself
            from detectron2.evaluation.pascal_voc_evaluation import parse_rec as parser
        return check_voc(dirname, split, classes, deep=deep, dataset=name, workers=workers,
                         shard=shard, evaluator_parser=parser)
    return check_dataset_dicts(DatasetCatalog.get(name), name,
                               None if classes is None else len(classes), deep=deep,
                               workers=workers, shard=shard)


def classify(finding, role, on_bad_image):
    """What a finding does at trainer start: ``"error"``, ``"skip"`` or ``"warning"``."""
    if finding.kind in NOTE_KINDS:  # how data is treated (iscrowd, ignored files): logged
        return "warning"
    if role != "unlabeled":
        return "error"
    if finding.kind in IMAGE_KINDS:
        return "skip" if on_bad_image == "skip" else "error"
    if finding.kind in BOX_KINDS:
        return "warning"  # only the pseudo-label precision measurement reads the pool's boxes
    return "error"


@dataclasses.dataclass
class StartCheck:
    """What the check found. ``pool_skips``: ``{normalized image path: reason}`` of the pool
    images left out of every round (``IMAGE_SCORE.ON_BAD_IMAGE skip``)."""

    reports: list  # (name, role, keys, CheckReport)
    pool_skips: dict
    warnings: list
    seconds: float


def check_before_training(cfg, roles=("labeled", "test", "unlabeled"), deep=False):
    """Check the datasets of ``cfg`` in ``roles`` (on every rank, sharded over the ranks);
    raise :class:`DataCheckError` listing the findings that must stop the run, else return
    a :class:`StartCheck`."""
    t0 = time.perf_counter()
    rank, world = comm.get_rank(), comm.get_world_size()
    policy = cfg.IMAGE_SCORE.ON_BAD_IMAGE
    reports, errors, warnings, skips = [], [], [], {}
    for name, role, keys in config_datasets(cfg):
        if role not in roles:
            continue
        local = check_registered_dataset(name, deep=deep, shard=(rank, world),
                                         evaluation=evaluated(keys))
        report = merge_reports(comm.all_gather(local)) if world > 1 else local
        reports.append((name, role, keys, report))
        for finding in report.findings:
            action = classify(finding, role, policy)
            if action == "error":
                errors.append((name, role, keys, finding))
            elif action == "warning":
                warnings.append(finding)
            else:
                skips[os.path.normpath(finding.image)] = f"{finding.kind}: {finding.message}"
    seconds = time.perf_counter() - t0
    if errors:
        raise DataCheckError(error_message(errors, reports, policy))
    if reports:
        _log(reports, warnings, skips, seconds)
    return StartCheck(reports, skips, warnings, seconds)


def error_message(errors, reports, policy):
    lines = [f"The data check before training found {len(errors)} problem(s) that would stop "
             "the run later or corrupt it:"]
    by_dataset = {}
    for name, role, keys, finding in errors:
        by_dataset.setdefault((name, role, keys), []).append(finding)
    for (name, role, keys), findings in by_dataset.items():
        lines.append(f"- {role} dataset {name!r} ({keys}): {len(findings)} problem(s)")
    lines.append(format_findings([e[3] for e in errors], MAX_LISTED))
    roles = {role for _, role, _, _ in errors}
    pool_images = [e for e in errors if e[1] == "unlabeled" and e[3].kind in IMAGE_KINDS]
    if pool_images:
        lines.append(f"The unlabeled pool's bad images stop the run because "
                     f"IMAGE_SCORE.ON_BAD_IMAGE is {policy!r}; set IMAGE_SCORE.ON_BAD_IMAGE skip "
                     "to leave them out of scoring (each round lists them in skipped.csv).")
    if roles & {"labeled", "test"}:
        lines.append("Labeled and test data must be complete: IMAGE_SCORE.ON_BAD_IMAGE applies to "
                     "the unlabeled pool only.")
    names = " ".join(name for name, _, _ in by_dataset)
    lines.append(f"List every problem: python tools/check_dataset.py {names} (or --config-file "
                 "with this config; --deep decodes every image).")
    return "\n".join(lines)


def _log(reports, warnings, skips, seconds):
    if not comm.is_main_process():
        return
    images = sum(r.num_images for *_, r in reports)
    parts = [f"{role} {name!r}: {r.num_images} images, {len(r.findings)} finding(s)"
             for name, role, _, r in reports]
    logger.info("Data check (header reads) of %d datasets, %d images in %.1f s: %s",
                len(reports), images, seconds, "; ".join(parts) or "none")
    if warnings:
        logger.warning("Data check: %d warning(s): notes on how data is treated, and box "
                       "problems in the unlabeled pool (they only affect the measured "
                       "pseudo-label precision):\n%s", len(warnings),
                       format_findings(warnings, MAX_LISTED))
    if skips:
        shown = "\n".join(f"  {path}: {reason}" for path, reason in list(skips.items())[:MAX_LISTED])
        more = f"\n  ... and {len(skips) - MAX_LISTED} more" if len(skips) > MAX_LISTED else ""
        logger.warning("Data check: %d unlabeled pool image(s) cannot be read and will be skipped "
                       "(IMAGE_SCORE.ON_BAD_IMAGE skip; each round lists them in skipped.csv):\n%s%s",
                       len(skips), shown, more)
