"""The selector registry: one place that knows every selector's name and how it ranks a pool.

A selector is a function ``fn(ctx: SelectorContext) -> Ranking`` registered under its
config name (``IMAGE_SCORE.SELECTOR``)::

    from imagescore_det.engine.selectors import Ranking, register_selector

    @register_selector("my_selector")
    def my_selector(ctx):
        return Ranking(scores=...)   # one float per pool image, higher = pseudo-label first

Config checks, the hook, ``tools/score_images.py`` and the benchmarks read the names from
here; nothing else needs to change to add one. A selector that fits and scores backbone
activation maps (``selection.fit_mask`` / ``score_pool``) says so with
``register_selector(name, image_score_passes=True)``: with ``IMAGE_SCORE.GRID ()`` and no
``IMAGE_SCORE.SCORE_RESIZE`` the hook then checks at trainer start that every image has one
input size. A selector that reads the pool's ground truth says so with ``needs_truth=True``:
the hook refuses a pool without annotations at trainer start. ``"none"`` (:data:`NO_SELECTION`) is not a selector: it means supervised
training only.
"""
import dataclasses
import logging
from typing import Callable, Dict, List, Optional, Set

import numpy as np

from . import selection

logger = logging.getLogger(__name__)

NO_SELECTION = "none"

_SELECTORS: Dict[str, Callable] = {}
_IMAGE_SCORE_PASSES: Set[str] = set()  # selectors that run the image-score passes
_NEEDS_TRUTH: Set[str] = set()  # selectors that read the pool's ground truth (the oracle)


@dataclasses.dataclass
class SelectorContext:
    """What a selector may use. Every rank calls the selector with the same context and
    must get the same ranking (``selection``'s functions shard and all-gather)."""

    cfg: object
    model: object  # the detector, in eval mode
    pool: List[dict]  # the unlabeled pool's dataset dicts, in pool order
    labeled: Callable[[], List[dict]]  # loads the labeled dataset dicts (only if needed)
    round_index: int = 1
    seed: int = 0  # the run's seed (the mask's subsample unless FIT_SEED, random unless SEED)
    # IMAGE_SCORE.ON_BAD_IMAGE skip: a dict that selection's functions (passed it as
    # ``skipped=``) fill with {pool index: reason} of the images they could not use; those
    # images' scores are ignored and the round leaves them out. None: they raise instead.
    skipped: Optional[dict] = None


@dataclasses.dataclass
class Ranking:
    """A selector's answer.

    Attributes:
        scores: float64 (len(pool),): higher = pseudo-label first.
        predictions: per pool image the detector's output ({boxes, scores, classes}) when the
            selector already ran the detector on the whole pool (then no second pass runs).
        scorer: the fitted ``ImageScorer`` when there is one (saved as the round's mask.pt).
        timing: seconds of each phase of the selection.
        truth: per pool image the pseudo-labels to train on as they are ({boxes, scores,
            classes}, the oracle's ground truth): the detector does not label the chosen
            images and no pseudo-label NMS applies to them.
    """

    scores: np.ndarray
    predictions: Optional[list] = None
    scorer: Optional[object] = None
    truth: Optional[list] = None
    timing: Dict[str, float] = dataclasses.field(default_factory=dict)


def register_selector(name, image_score_passes=False, needs_truth=False):
    """Decorator: register ``fn(ctx) -> Ranking`` as selector ``name``.

    ``image_score_passes``: the selector fits and scores backbone activation maps (the
    dataset mask), so ``IMAGE_SCORE.GRID`` / ``SCORE_RESIZE`` and their checks apply to it.
    ``needs_truth``: it reads the pool's annotations, so a pool without them is refused
    at trainer start.
    """
    if name == NO_SELECTION:
        raise ValueError(f"'{NO_SELECTION}' is reserved: it means no pseudo-labels")

    def deco(fn):
        if name in _SELECTORS and _SELECTORS[name] is not fn:
            raise ValueError(f"A selector named {name!r} is already registered "
                             f"({_SELECTORS[name].__module__}.{_SELECTORS[name].__name__})")
        _SELECTORS[name] = fn
        if image_score_passes:
            _IMAGE_SCORE_PASSES.add(name)
        if needs_truth:
            _NEEDS_TRUTH.add(name)
        return fn

    return deco


def unregister_selector(name):
    """Remove a registered selector (tests and plug-ins that register temporary ones)."""
    _SELECTORS.pop(name, None)
    _IMAGE_SCORE_PASSES.discard(name)
    _NEEDS_TRUTH.discard(name)


def uses_image_score_passes(name):
    """Whether selector ``name`` fits and scores backbone activation maps."""
    return name in _IMAGE_SCORE_PASSES


def needs_pool_truth(name):
    """Whether selector ``name`` reads the pool's ground truth (annotations)."""
    return name in _NEEDS_TRUTH


def images_without_truth(pool):
    """The file names of the pool images whose dataset dict has no ``annotations``."""
    return [d.get("file_name", d.get("image_id")) for d in pool if "annotations" not in d]


def selector_names():
    """The registered selector names (without ``"none"``), in registration order."""
    return tuple(_SELECTORS)


def config_selector_names():
    """Every valid ``IMAGE_SCORE.SELECTOR`` value."""
    return selector_names() + (NO_SELECTION,)


def get_selector(name):
    if name not in _SELECTORS:
        raise KeyError(f"Unknown selector {name!r}; registered: {', '.join(selector_names())} "
                       f"(or '{NO_SELECTION}').")
    return _SELECTORS[name]


def rank_pool(name, ctx):
    """Run selector ``name`` on ``ctx``; checks the shape of its answer."""
    ranking = get_selector(name)(ctx)
    scores = np.asarray(ranking.scores, dtype=np.float64)
    if scores.shape != (len(ctx.pool),):
        raise ValueError(f"Selector {name!r} returned {scores.shape} scores for a pool of "
                         f"{len(ctx.pool)} images")
    finite = np.isfinite(scores)
    finite[list(ctx.skipped or ())] = True  # skipped images' scores are ignored
    if not np.all(finite):
        raise ValueError(f"Selector {name!r} returned non-finite scores")
    ranking.scores = scores
    return ranking


# --------------------------------------------------------------------------- built-ins
@register_selector("image_score", image_score_passes=True)
def image_score(ctx):
    """The method: fit the dataset mask on the labeled images, score the pool (backbone only)."""
    scores, scorer, seconds = selection.image_scores(ctx.cfg, ctx.model, ctx.labeled(), ctx.pool,
                                                     skipped=ctx.skipped, seed=ctx.seed)
    return Ranking(scores, scorer=scorer, timing={"scoring_s": seconds})


def _pool_confidence(ctx):
    """(predictions of the whole pool, their softmax confidence, seconds); an image that
    could not be read has prediction None and confidence NaN (it is in ctx.skipped)."""
    predictions, seconds = selection.predict(ctx.cfg, ctx.model, ctx.pool, "infer pool",
                                             skipped=ctx.skipped)
    scores = selection.softmax_confidence(
        [{"scores": []} if p is None else p for p in predictions],
        ctx.cfg.IMAGE_SCORE.BOX_SCORE_THRESH)
    scores[np.array([p is None for p in predictions], dtype=bool)] = np.nan  # in ctx.skipped
    return predictions, scores, seconds


@register_selector("softmax")
def softmax(ctx):
    """The paper's softmax baseline: mean confidence of the boxes that would be kept."""
    predictions, scores, seconds = _pool_confidence(ctx)
    return Ranking(scores, predictions=predictions, timing={"inference_pool_s": seconds})


@register_selector("random")
def random_selection(ctx):
    """A uniformly random subset, seeded by IMAGE_SCORE.SEED (else the run's seed) and the
    round."""
    seed = selection.random_selector_seed(ctx.cfg, ctx.seed)
    return Ranking(selection.random_scores(len(ctx.pool), seed * 1000 + ctx.round_index))


def truth_as_prediction(dataset_dict):
    """An image's ground truth in the detector's output format ({boxes XYXY_ABS, scores 1.0,
    classes}); crowd boxes are left out, as Detectron2's training leaves them out."""
    from detectron2.structures import BoxMode

    anns = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            "scores": np.ones(len(anns)), "classes": np.asarray(
                [int(a["category_id"]) for a in anns], dtype=np.int64)}


@register_selector("oracle", needs_truth=True)
def oracle(ctx):
    """The upper bound at a given count: the images ``random`` chooses (the same scores: the
    same seed, round and back-fill order), labeled with the pool's ground truth instead of
    the detector's predictions. TOP_FRACTION 1.0 trains on the whole pool, labeled."""
    missing = images_without_truth(ctx.pool)
    if missing:
        raise ValueError(f"Selector 'oracle' labels with the pool's ground truth, but "
                         f"{len(missing)} pool image(s) have no ground truth (no "
                         f"'annotations'), e.g. {missing[0]}")
    ranking = random_selection(ctx)
    ranking.truth = [truth_as_prediction(d) for d in ctx.pool]
    return ranking


@register_selector("hybrid", image_score_passes=True)
def hybrid(ctx):
    """Confidence filter, image-score rank: the images whose softmax confidence is at least
    IMAGE_SCORE.HYBRID_MIN_CONFIDENCE by Image Score, then the others by Image Score
    (``selection.confidence_filtered_scores``). The pool's predictions are kept for the
    pseudo-labels, so the detector runs once over the pool."""
    predictions, confidence, inference_s = _pool_confidence(ctx)
    image_score, scorer, scoring_s = selection.image_scores(
        ctx.cfg, ctx.model, ctx.labeled(), ctx.pool, skipped=ctx.skipped, seed=ctx.seed)
    scores = selection.confidence_filtered_scores(
        image_score, confidence, ctx.cfg.IMAGE_SCORE.HYBRID_MIN_CONFIDENCE,
        len(scorer.layer_names))
    return Ranking(scores, predictions=predictions, scorer=scorer,
                   timing={"inference_pool_s": inference_s, "scoring_s": scoring_s})


@register_selector("image_score_per_class", image_score_passes=True)
def image_score_per_class(ctx):
    """Image Score against per-class masks (``selection.per_class_image_scores``): labeled
    images by the class of their largest box, pool images by that of their most confident
    kept predicted box; pool images without one rank last. Needs the detector on the whole
    pool; its predictions are kept for the pseudo-labels."""
    predictions, inference_s = selection.predict(ctx.cfg, ctx.model, ctx.pool, "infer pool",
                                                 skipped=ctx.skipped)
    scores, scorer, unscored, scoring_s = selection.per_class_image_scores(
        ctx.cfg, ctx.model, ctx.labeled(), ctx.pool, predictions, skipped=ctx.skipped,
        seed=ctx.seed)
    if unscored:
        logger.info("image_score_per_class: %d of %d pool images have no kept box (score >= "
                    "BOX_SCORE_THRESH) or a class without a fitted mask; they rank last",
                    unscored, len(ctx.pool))
    return Ranking(scores, predictions=predictions, scorer=scorer,
                   timing={"inference_pool_s": inference_s, "scoring_s": scoring_s})
