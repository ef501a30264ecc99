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

from ..data.pseudo import predictions_to_dicts, pseudo_dataset_name
from ..evaluation.pseudo_labels import (pool_precision_analysis, precision_by_score_bin,
                                        pseudo_label_quality)
from . import selection
from .ranking import select_top
from .round_files import RoundManifest
from .selectors import SelectorContext, rank_pool

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RoundResult:
    """Everything one round computed (the same on every rank).

    ``chosen`` are pool indices, best first; ``predictions`` the detector's output for the
    chosen images (in ``chosen`` order); ``box_counts`` the boxes each chosen image kept;
    ``pseudo`` the dataset dicts trained on; ``quality`` per chosen image (true positives,
    false positives, true boxes) when the pool has annotations.
    """

    round_index: int
    iteration: int
    selector: str
    pool: List[dict]
    scores: np.ndarray
    chosen: np.ndarray
    predictions: list
    box_counts: List[int]
    pseudo: List[dict]
    timing: Dict[str, float]
    scorer: Optional[object] = None
    quality: Optional[list] = None
    pool_analysis: Optional[dict] = None

    @property
    def domains(self):
        """Per pool image its domain (the synthetic set's "typical"/"shifted"), or None."""
        values = [d.get("domain") for d in self.pool]
        return None if any(v is None for v in values) else values

    def selection_digest(self):
        """A short hash of the chosen indices (equal on every rank, logged for audits)."""
        return hashlib.sha256(np.asarray(self.chosen, dtype=np.int64).tobytes()).hexdigest()[:16]


def has_truth(dicts):
    """Whether every dict carries annotations (synthetic pools, or a labeled set used as one)."""
    return all("annotations" in d for d in dicts)


def kept_annotations(prediction, score_thresh):
    """The boxes of one prediction that become pseudo-labels (score >= ``score_thresh``)."""
    return [{"bbox": list(map(float, box)), "category_id": int(cls), "score": float(score)}
            for box, cls, score in zip(prediction["boxes"], prediction["classes"],
                                       prediction["scores"]) if score >= score_thresh]


def quality_rows(predictions, dicts, settings):
    """Per image (tp, fp, n_true) of the boxes that would be pseudo-labels, against the truth."""
    kept = [kept_annotations(p, settings.BOX_SCORE_THRESH) for p in predictions]
    return pseudo_label_quality(kept, [d["annotations"] for d in dicts],
                                settings.PSEUDO_IOU_THRESH)


def compute_round(cfg, model, pool, round_index, iteration, labeled, seed=0):
    """Rank ``pool`` with ``cfg.IMAGE_SCORE.SELECTOR``, select the top fraction and
    pseudo-label it with ``model`` (put in eval mode for the round, restored after).

    Args:
        labeled: callable returning the labeled dataset dicts (the mask is fitted on them).
        seed: the run's seed (the random selector's stream).
    """
    settings = cfg.IMAGE_SCORE
    was_training = model.training
    model.eval()
    logger.info("Selection round %d at iteration %d: %s over %d unlabeled images",
                round_index, iteration, settings.SELECTOR, len(pool))
    try:
        ctx = SelectorContext(cfg=cfg, model=model, pool=pool, labeled=labeled,
                              round_index=round_index, seed=seed)
        ranking = rank_pool(settings.SELECTOR, ctx)
        timing = dict(ranking.timing)
        chosen = select_top(ranking.scores, settings.TOP_FRACTION)
        if ranking.predictions is None:
            chosen_predictions, timing["pseudo_label_s"] = selection.predict(
                cfg, model, [pool[i] for i in chosen])
        else:
            chosen_predictions = [ranking.predictions[i] for i in chosen]
            timing["pseudo_label_s"] = 0.0
        timing["selection_total_s"] = sum(timing.values())
        pool_predictions = ranking.predictions
        if settings.ANALYZE_POOL and has_truth(pool) and pool_predictions is None:
            # analysis only: the pseudo-labels every pool image would have had
            pool_predictions, timing["analysis_inference_pool_s"] = selection.predict(
                cfg, model, pool, "analyze pool")
    finally:
        model.train(was_training)

    chosen_dicts = [pool[i] for i in chosen]
    pseudo, box_counts = predictions_to_dicts(chosen_dicts, chosen_predictions,
                                              settings.BOX_SCORE_THRESH,
                                              settings.MIN_BOXES_PER_IMAGE)
    result = RoundResult(round_index=round_index, iteration=iteration,
                         selector=settings.SELECTOR, pool=pool, scores=ranking.scores,
                         chosen=chosen, predictions=chosen_predictions, box_counts=box_counts,
                         pseudo=pseudo, timing=timing, scorer=ranking.scorer)
    if settings.EVAL_PSEUDO_LABELS and has_truth(chosen_dicts):
        result.quality = quality_rows(chosen_predictions, chosen_dicts, settings)
    if settings.ANALYZE_POOL and pool_predictions is not None and has_truth(pool):
        rows = quality_rows(pool_predictions, pool, settings)
        result.pool_analysis = pool_precision_analysis(ranking.scores, chosen, rows)
    logger.info("Rank %d selection digest %s", comm.get_rank(), result.selection_digest())
    return result


def summarize(result, cfg, thing_classes, fingerprint):
    """The round's :class:`RoundManifest` (what report.json and the round folder record)."""
    settings = cfg.IMAGE_SCORE
    per_class = {name: 0 for name in thing_classes}
    for pseudo_dict in result.pseudo:
        for ann in pseudo_dict["annotations"]:
            per_class[thing_classes[ann["category_id"]]] += 1
    selected_scores = result.scores[result.chosen]
    manifest = RoundManifest(
        round=result.round_index, iteration=result.iteration, selector=result.selector,
        dataset_name=pseudo_dataset_name(settings.UNLABELED_DATASETS, result.round_index),
        fingerprint=fingerprint, unlabeled_datasets=list(settings.UNLABELED_DATASETS),
        thing_classes=list(thing_classes), pool_size=len(result.pool),
        num_selected=int(len(result.chosen)), num_pseudo_images=len(result.pseudo),
        num_dropped_empty=int(sum(c < settings.MIN_BOXES_PER_IMAGE for c in result.box_counts)),
        num_pseudo_boxes=int(sum(len(d["annotations"]) for d in result.pseudo)),
        boxes_per_image=float(np.mean(result.box_counts)) if result.box_counts else 0.0,
        selected_score_mean=float(np.mean(selected_scores)),
        selected_score_min=float(np.min(selected_scores)),
        pool_score_mean=float(np.mean(result.scores)),
        per_class_boxes=per_class, timing=dict(result.timing))
    if result.domains is not None:
        manifest.domains = domain_stats(result.domains, result.scores, result.chosen)
    if result.quality is not None:
        tp, fp, n_true = (int(sum(row[j] for row in result.quality)) for j in range(3))
        manifest.pseudo_precision = tp / (tp + fp) if tp + fp else None
        manifest.pseudo_recall = tp / n_true if n_true else None
        manifest.precision_by_score_bin = precision_by_score_bin(
            selected_scores, [row[0] for row in result.quality],
            [row[1] for row in result.quality])
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
