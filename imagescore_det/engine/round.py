"""One selection round as a plain function: rank the pool, select, pseudo-label, summarise.

:func:`compute_round` is what :class:`~imagescore_det.engine.hook.ImageScoreHook` calls at a
round's iteration (on every rank, with the same result on every rank); it touches neither
the trainer nor the disk. :mod:`~imagescore_det.engine.round_files` writes its result.
"""
import dataclasses
import hashlib
import logging
from typing import Dict, List, Optional

import numpy as np

from detectron2.utils import comm

from ..data.pseudo import class_agnostic_nms, predictions_to_dicts, pseudo_dataset_name
from ..evaluation.pseudo_labels import (pool_precision_analysis, precision_by_score_bin,
                                        precision_of, pseudo_box_correctness,
                                        pseudo_label_quality)
from . import selection
from .bad_images import drop_skipped, skip_record
from .ranking import rank_order, select_top
from .round_files import RoundManifest
from .selectors import SelectorContext, images_without_truth, rank_pool, truth_as_prediction

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RoundResult:
    """Everything one round computed (the same on every rank).

    ``chosen``: the top ``ceil(TOP_FRACTION * N)`` pool indices, best first (the literal
    selection). ``examined``: the indices that were pseudo-labeled, in rank order: ``chosen``
    plus, with ``IMAGE_SCORE.BACKFILL``, the next images by rank that replaced chosen ones
    left with fewer than ``MIN_BOXES_PER_IMAGE`` boxes. ``predictions`` / ``box_counts`` /
    ``quality`` are per examined image (in ``examined`` order); ``trained`` marks the examined
    images kept in the pseudo dataset ``pseudo`` (what the detector trains on).
    ``quality`` rows are (true positives, false positives, true boxes) when the pool has
    annotations. ``pool_quality`` (``IMAGE_SCORE.ANALYZE_POOL``) has the same rows for every
    pool image, in pool order: the pseudo-labels each would get from this detector, selected
    or not (scores.csv's ``pool_*`` columns); ``pool_boxes`` the same per box: per pool image a
    list of (category_id, confidence, correct) of its would-be pseudo-boxes (pool_boxes.csv).
    ``pool`` holds the images that were ranked;
    ``skipped`` lists the pool images left out (``IMAGE_SCORE.ON_BAD_IMAGE skip``) as
    skipped.csv rows (image_id, file_name, phase, reason): at the data check, while ranking
    (not in ``pool``), or while pseudo-labeling (in ``pool``, ranked, not examined).
    """

    round_index: int
    iteration: int
    selector: str
    pool: List[dict]
    scores: np.ndarray
    chosen: np.ndarray
    examined: np.ndarray
    predictions: list
    box_counts: List[int]
    trained: List[bool]
    pseudo: List[dict]
    timing: Dict[str, float]
    seed: int = 0
    scorer: Optional[object] = None
    quality: Optional[list] = None
    pool_quality: Optional[list] = None
    pool_boxes: Optional[list] = None
    pool_analysis: Optional[dict] = None
    skipped: List[dict] = dataclasses.field(default_factory=list)

    @property
    def domains(self):
        """Per pool image its domain (the synthetic set's "typical"/"shifted"), or None."""
        values = [d.get("domain") for d in self.pool]
        return None if any(v is None for v in values) else values

    def selection_digest(self):
        """A short hash of the pseudo-labeled indices and which were kept (equal on every
        rank, logged for audits)."""
        data = np.stack([np.asarray(self.examined, dtype=np.int64),
                         np.asarray(self.trained, dtype=np.int64)]) if len(self.examined) else b""
        return hashlib.sha256(bytes(data)).hexdigest()[:16]


def has_truth(dicts):
    """Whether every dict carries annotations (synthetic pools, or a labeled set used as one)."""
    return not images_without_truth(dicts)


def kept_annotations(prediction, score_thresh):
    """The boxes of one prediction that become pseudo-labels (score >= ``score_thresh``)."""
    return [{"bbox": list(map(float, box)), "category_id": int(cls), "score": float(score)}
            for box, cls, score in zip(prediction["boxes"], prediction["classes"],
                                       prediction["scores"]) if score >= score_thresh]


def pseudo_label_nms(prediction, settings):
    """The prediction whose boxes become pseudo-labels (IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS)."""
    if settings.PSEUDO_CLASS_AGNOSTIC_NMS:
        return class_agnostic_nms(prediction, settings.PSEUDO_NMS_THRESH)
    return prediction


def true_annotations(dataset_dict):
    """An image's true boxes as XYXY_ABS annotations, crowd boxes left out (whatever the
    dataset's ``bbox_mode``: COCO-style datasets give XYWH)."""
    truth = truth_as_prediction(dataset_dict)
    return [{"bbox": list(map(float, box)), "category_id": int(cls)}
            for box, cls in zip(truth["boxes"], truth["classes"])]


def box_rows(predictions, dicts, settings):
    """Per image, per box that would be a pseudo-label: (category_id, confidence, correct)
    against the truth (the boxes :func:`quality_rows` counts)."""
    kept = [kept_annotations(p, settings.BOX_SCORE_THRESH) for p in predictions]
    correct = pseudo_box_correctness(kept, [true_annotations(d) for d in dicts],
                                     settings.PSEUDO_IOU_THRESH)
    return [[(a["category_id"], a["score"], bool(c)) for a, c in zip(boxes, flags)]
            for boxes, flags in zip(kept, correct)]


def quality_rows(predictions, dicts, settings):
    """Per image (tp, fp, n_true) of the boxes that would be pseudo-labels, against the truth."""
    kept = [kept_annotations(p, settings.BOX_SCORE_THRESH) for p in predictions]
    return pseudo_label_quality(kept, [true_annotations(d) for d in dicts],
                                settings.PSEUDO_IOU_THRESH)


def pseudo_label_in_rank_order(order, target, predict, num_kept_boxes, min_boxes, backfill):
    """Pseudo-label images in rank order until ``target`` of them keep enough boxes.

    Args:
        order: pool indices, best first.
        target: how many pseudo-labeled images are wanted (``ceil(TOP_FRACTION * N)``).
        predict: callable(list of pool indices) -> their predictions (one pass each call).
        num_kept_boxes: callable(prediction) -> boxes that would become pseudo-labels.
        min_boxes: an image with fewer kept boxes is not trained on.
        backfill: False pseudo-labels exactly ``order[:target]``; True replaces every image
            left with too few boxes by the next one by rank, predicting only what is needed.

    Returns:
        (examined indices, their predictions, their kept-box counts), in rank order.
    """
    examined, predictions, counts = [], [], []
    kept, position = 0, 0
    while kept < target and position < len(order):
        batch = [int(i) for i in order[position:position + target - kept]]
        position += len(batch)
        for index, prediction in zip(batch, predict(batch)):
            if prediction is None:  # a bad image, skipped (predict recorded why)
                continue
            count = num_kept_boxes(prediction)
            examined.append(index)
            predictions.append(prediction)
            counts.append(count)
            kept += int(count >= min_boxes)
        if not backfill:
            break
    return examined, predictions, counts


def compute_round(cfg, model, pool, round_index, iteration, labeled, seed=0, skipped=None):
    """Rank ``pool`` with ``cfg.IMAGE_SCORE.SELECTOR``, select the top fraction and
    pseudo-label it with ``model`` (put in eval mode for the round, restored after).

    Args:
        labeled: callable returning the labeled dataset dicts (the mask is fitted on them).
        seed: the run's seed (``consistency.run_seed``: the fit subsample's unless
            ``FIT_SEED``, the random selector's unless ``IMAGE_SCORE.SEED``).
        skipped: ``{pool index: reason}`` of images known to be unusable (the data check at
            trainer start); they are left out. With ``IMAGE_SCORE.ON_BAD_IMAGE skip`` images
            that fail during the round are left out too; all are in ``result.skipped``.
    """
    settings = cfg.IMAGE_SCORE
    skip = settings.ON_BAD_IMAGE == "skip"
    records = []
    pool, _ = drop_skipped(pool, None, dict(skipped or {}), records, "data check")
    was_training = model.training
    model.eval()
    logger.info("Selection round %d at iteration %d: %s over %d unlabeled images",
                round_index, iteration, settings.SELECTOR, len(pool))
    try:
        ctx = SelectorContext(cfg=cfg, model=model, pool=pool, labeled=labeled,
                              round_index=round_index, seed=seed, skipped={} if skip else None)
        ranking = rank_pool(settings.SELECTOR, ctx)
        pool, ranking = drop_skipped(pool, ranking, ctx.skipped, records, "score")
        timing = dict(ranking.timing)
        chosen = select_top(ranking.scores, settings.TOP_FRACTION)
        timing["pseudo_label_s"] = 0.0

        def predict(indices):
            if ranking.truth is not None:  # the oracle: the truth as it is, no NMS
                return [ranking.truth[i] for i in indices]
            if ranking.predictions is not None:
                out = [ranking.predictions[i] for i in indices]
            else:
                failed = {} if skip else None
                out, seconds = selection.predict(cfg, model, [pool[i] for i in indices],
                                                 skipped=failed)
                timing["pseudo_label_s"] += seconds
                records.extend(skip_record(pool[indices[j]], reason, "pseudo-label")
                               for j, reason in sorted((failed or {}).items()))
            return [None if p is None else pseudo_label_nms(p, settings) for p in out]

        examined, predictions, box_counts = pseudo_label_in_rank_order(
            rank_order(ranking.scores), len(chosen), predict,
            lambda p: len(kept_annotations(p, settings.BOX_SCORE_THRESH)),
            settings.MIN_BOXES_PER_IMAGE, settings.BACKFILL)
        timing["selection_total_s"] = sum(timing.values())
        pool_predictions = ranking.predictions
        if settings.ANALYZE_POOL and has_truth(pool) and pool_predictions is None:
            # analysis only: the pseudo-labels every pool image would have had
            failed = {} if skip else None
            pool_predictions, timing["analysis_inference_pool_s"] = selection.predict(
                cfg, model, pool, "analyze pool", skipped=failed)
            if failed:  # analysis only: such an image counts as one without detections
                logger.warning("ANALYZE_POOL: %d pool image(s) could not be read again: %s",
                               len(failed), {pool[i]["file_name"]: r for i, r in failed.items()})
                pool_predictions = [p if p is not None else {
                    "boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                    "classes": np.zeros(0, dtype=np.int64)} for p in pool_predictions]
    finally:
        model.train(was_training)

    examined_dicts = [pool[i] for i in examined]
    pseudo, _ = predictions_to_dicts(examined_dicts, predictions, settings.BOX_SCORE_THRESH,
                                     settings.MIN_BOXES_PER_IMAGE)
    result = RoundResult(round_index=round_index, iteration=iteration,
                         selector=settings.SELECTOR, pool=pool, scores=ranking.scores,
                         chosen=chosen, examined=np.asarray(examined, dtype=np.int64),
                         predictions=predictions, box_counts=box_counts,
                         trained=[count >= settings.MIN_BOXES_PER_IMAGE for count in box_counts],
                         pseudo=pseudo, timing=timing, seed=seed, scorer=ranking.scorer,
                         skipped=records)
    if settings.EVAL_PSEUDO_LABELS and has_truth(examined_dicts):
        result.quality = quality_rows(predictions, examined_dicts, settings)
    if settings.ANALYZE_POOL and pool_predictions is not None and has_truth(pool):
        judged = [pseudo_label_nms(p, settings) for p in pool_predictions]
        result.pool_quality = quality_rows(judged, pool, settings)
        result.pool_boxes = box_rows(judged, pool, settings)
        trained = [i for i, kept in zip(examined, result.trained) if kept]
        result.pool_analysis = pool_precision_analysis(ranking.scores, trained,
                                                       result.pool_quality)
        # what either NMS would give over the whole pool (same detector, same threshold)
        result.pool_analysis["pool_precision_by_nms"] = {
            name: precision_of(quality_rows(
                [class_agnostic_nms(p, settings.PSEUDO_NMS_THRESH) if agnostic else p
                 for p in pool_predictions], pool, settings))
            for name, agnostic in (("per_class", False), ("class_agnostic", True))}
    logger.info("Rank %d selection digest %s", comm.get_rank(), result.selection_digest())
    if records:
        logger.warning("Round %d skipped %d pool image(s) (IMAGE_SCORE.ON_BAD_IMAGE skip; listed "
                       "in the round's skipped.csv), e.g. %s: %s", round_index, len(records),
                       records[0]["file_name"], records[0]["reason"])
    return result


def summarize(result, cfg, thing_classes, fingerprint, fingerprint_items=None):
    """The round's :class:`RoundManifest` (what report.json and the round folder record)."""
    settings = cfg.IMAGE_SCORE
    per_class = {name: 0 for name in thing_classes}
    for pseudo_dict in result.pseudo:
        for ann in pseudo_dict["annotations"]:
            per_class[thing_classes[ann["category_id"]]] += 1
    trained = result.examined[np.asarray(result.trained, dtype=bool)]
    trained_scores = result.scores[trained] if len(trained) else result.scores[result.chosen]
    manifest = RoundManifest(
        round=result.round_index, iteration=result.iteration, selector=result.selector,
        dataset_name=pseudo_dataset_name(settings.UNLABELED_DATASETS, result.round_index),
        fingerprint=fingerprint, unlabeled_datasets=list(settings.UNLABELED_DATASETS),
        thing_classes=list(thing_classes), pool_size=len(result.pool),
        num_selected=int(len(result.chosen)),
        num_backfilled=len(set(result.examined.tolist()) - set(result.chosen.tolist())),
        num_dropped=int(len(result.examined) - len(trained)),
        num_pseudo_images=len(result.pseudo),
        num_background_images=int(sum(len(d["annotations"]) == 0 for d in result.pseudo)),
        num_pseudo_boxes=int(sum(len(d["annotations"]) for d in result.pseudo)),
        boxes_per_image=float(np.mean(result.box_counts)) if result.box_counts else 0.0,
        selected_score_mean=float(np.mean(trained_scores)),
        selected_score_min=float(np.min(trained_scores)),
        pool_score_mean=float(np.mean(result.scores)),
        per_class_boxes=per_class, timing=dict(result.timing), seed=result.seed,
        fingerprint_items=fingerprint_items, num_skipped=len(result.skipped))
    if result.domains is not None:
        manifest.domains = domain_stats(result.domains, result.scores, trained)
    if result.quality is not None:
        rows = [row for row, kept in zip(result.quality, result.trained) if kept]
        overall = precision_of(rows)
        manifest.pseudo_precision, manifest.pseudo_recall = overall["precision"], overall["recall"]
        if rows:  # none kept (every selected image below MIN_BOXES_PER_IMAGE): no bins
            manifest.precision_by_score_bin = precision_by_score_bin(
                trained_scores, [row[0] for row in rows], [row[1] for row in rows])
    if result.pool_analysis is not None:
        for key, value in result.pool_analysis.items():
            setattr(manifest, key, value)
    return manifest


def domain_stats(domains, scores, chosen):
    """How the selection splits across the pool's domains."""
    selected = np.zeros(len(scores), dtype=bool)
    selected[np.asarray(chosen, dtype=np.int64)] = True
    domains = np.asarray(domains)
    out = {}
    for group in sorted(set(domains.tolist())):
        in_group = domains == group
        out[group] = {"pool": int(in_group.sum()), "selected": int((in_group & selected).sum()),
                      "mean_score": float(np.mean(scores[in_group]))}
    return out
