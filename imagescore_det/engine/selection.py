"""Running the selectors over an unlabeled pool, sharded across ranks.

Every function here is called on every rank (like Detectron2's ``inference_on_dataset``) and
returns the same result on every rank: each rank processes a contiguous shard of the images
(Detectron2's ``InferenceSampler``) and the results are all-gathered in pool order.

An image that cannot be read, decoded or gives a non-finite activation is caught per image
and all-gathered with the results (:mod:`~imagescore_det.engine.bad_images`): with a
``skipped`` dict it is recorded there on every rank, without one every rank raises
``BadImageError`` naming it.
"""
import hashlib
import itertools
import logging
import math
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..faults import fault_point
from ..scoring import ImageBatch, ImageScorer
from ..scoring.scorer import RATIO_FLOOR
from .amp import inference_autocast
from .bad_images import NON_FINITE, FiniteWatch, SafeMapper, settle, split_batch, with_rank
from .batching import size_order
from .ranking import select_top  # noqa: F401  (re-exported: selection.select_top)

logger = logging.getLogger(__name__)

# Default recorded layers, by backbone class name: every conv block output after its ReLU.
DEFAULT_LAYERS = {
    "VGG16": r"conv\d_\d",
    "ResNet": r"stem|res\d\.\d+",
    "FPN": r"bottom_up\.(stem|res\d\.\d+)",
}


def default_layers(backbone):
    name = type(backbone).__name__
    if name not in DEFAULT_LAYERS:
        raise ValueError(f"No default IMAGE_SCORE.LAYERS for backbone {name}; set "
                         "IMAGE_SCORE.LAYERS to regular expressions of its module names.")
    return DEFAULT_LAYERS[name]


def layers_from_cfg(cfg, backbone):
    if cfg.IMAGE_SCORE.LAYERS:
        return "|".join(f"(?:{p})" for p in cfg.IMAGE_SCORE.LAYERS)
    return default_layers(backbone)


def score_resize(cfg):
    """``IMAGE_SCORE.SCORE_RESIZE`` as ``(h, w)``, or None when it is off (``()``)."""
    size = cfg.IMAGE_SCORE.SCORE_RESIZE
    return (int(size[0]), int(size[1])) if len(size) else None


def scorer_grid(cfg):
    """``IMAGE_SCORE.GRID`` as the scorer's ``grid`` argument (None for ``()``)."""
    return tuple(cfg.IMAGE_SCORE.GRID) if len(cfg.IMAGE_SCORE.GRID) else None


def _loader(cfg, dicts, mapper=None):
    """A sharded test loader over ``dicts`` (each tagged with its ``pool_index``); ``mapper``
    defaults to Detectron2's test-time ``DatasetMapper``."""
    indexed = [dict(d, pool_index=i) for i, d in enumerate(dicts)]
    mapper = DatasetMapper(cfg, is_train=False) if mapper is None else mapper
    return build_detection_test_loader(
        indexed, mapper=SafeMapper(mapper),
        batch_size=cfg.IMAGE_SCORE.BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS)


def _score_loader(cfg, dicts):
    """The loader of the image-score passes (fit and score): the test-time one, or with
    ``IMAGE_SCORE.SCORE_RESIZE`` (h, w) one that resizes every image to exactly ``h x w``
    (Detectron2's ``T.Resize``: PIL bilinear on the decoded image) instead of the test-time
    ``ResizeShortestEdge``, so every activation map has one size and needs no pooling."""
    resize = score_resize(cfg)
    if resize is None:
        return _loader(cfg, dicts)
    return _loader(cfg, dicts, DatasetMapper(cfg, is_train=False,
                                             augmentations=[T.Resize(resize)]))


def _progress(loader, desc):
    return tqdm(loader, desc=desc, disable=not comm.is_main_process(), mininterval=5,
                unit="batch")


def _shard_size(n, rank, world):
    """Images of ``n`` that Detectron2's InferenceSampler gives ``rank``."""
    return n // world + int(rank < n % world)


def _gather_in_order(index_value_pairs, n, failures=(), skipped=None, dicts=None,
                     what="unlabeled pool"):
    """All-gather (pool index, value) pairs and (pool index, reason) failures of every rank
    into a list in pool order (None for a failed image), then :func:`settle` the failures."""
    out, failed = [None] * n, {}
    for part, part_failures in comm.all_gather((index_value_pairs, with_rank(failures))):
        for index, value in part:
            out[index] = value
        failed.update(part_failures)
    missing = [i for i, v in enumerate(out) if v is None and i not in failed]
    if missing:
        raise RuntimeError(f"{len(missing)} pool images got no result (first: {missing[:5]})")
    settle(failed, dicts, skipped, what)
    return out


def _nonempty(batches):
    """``batches`` if it yields anything (the scorer refuses an empty pass), else None."""
    try:
        first = next(batches)
    except StopIteration:
        return None
    return itertools.chain([first], batches)


def _all_reduce_sum(t):
    if comm.get_world_size() > 1:
        # gloo and NCCL both reduce float64 tensors; NCCL needs them on the GPU
        dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
        buf = t.to(dev)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        t.copy_(buf.to(t.device))


# Dataset-dict key that carries an image's class through the mapper into the scorer's
# ImageBatch.labels (per-class mode: the true class when fitting, the predicted one when
# scoring; the mapper keeps unknown keys, as it keeps ``pool_index``).
SCORE_CLASS = "image_score_class"


def _backbone_batches(model, loader, sink, desc, failures=None, per_class=False):
    """ImageBatches of the readable images; ``sink`` gets each batch's list of pool indices,
    ``failures`` the (pool index, reason) of the images that could not be read (None: they
    are left out silently, for benchmarks only). ``per_class``: each batch carries its
    images' :data:`SCORE_CLASS` as labels."""
    failures = [] if failures is None else failures
    for batch in _progress(loader, desc):
        batch = split_batch(batch, failures)
        if not batch:
            continue
        images = model.preprocess_image(batch)
        sink.append([image["pool_index"] for image in batch])
        yield ImageBatch(inputs=images.tensor,
                         valid_sizes=[tuple(size) for size in images.image_sizes],
                         labels=[image[SCORE_CLASS] for image in batch] if per_class else None)
        fault_point(desc)  # test-only kill point (IMAGESCORE_FAULT=fit_mask / score)


def fit_subsample(dicts, max_images, seed):
    """The labeled images the mask is fitted on (``IMAGE_SCORE.FIT_MAX_IMAGES``).

    All of them when ``max_images`` is 0 or at least their number; else ``max_images`` of
    them drawn without replacement by ``seed`` alone (the same on every rank), kept in
    dataset order. For one seed the subsamples are nested: size k is the first k of one
    seeded permutation, so a larger size only adds images.
    """
    if max_images <= 0 or max_images >= len(dicts):
        return list(dicts)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(dicts))[:max_images])
    return [dicts[i] for i in chosen]


def subsample_digest(dicts):
    """A short hash of the images' file names, in order (logged for audits)."""
    names = "\n".join(str(d.get("file_name")) for d in dicts)
    return hashlib.sha256(names.encode()).hexdigest()[:12]


def fit_seed(cfg, seed):
    """``IMAGE_SCORE.FIT_SEED``, or the run's seed ``seed`` when it is -1."""
    return int(cfg.IMAGE_SCORE.FIT_SEED) if cfg.IMAGE_SCORE.FIT_SEED >= 0 else int(seed)


def random_selector_seed(cfg, seed):
    """``IMAGE_SCORE.SEED``, or the run's seed ``seed`` when it is -1 (or no config)."""
    if cfg is not None and cfg.IMAGE_SCORE.SEED >= 0:
        return int(cfg.IMAGE_SCORE.SEED)
    return int(seed)


def _watched_layers(scorer):
    modules = dict(scorer.model.named_modules())
    return [modules[name] for name in scorer.layer_names]  # checked before the scorer's hooks


def _check_resize_fits_backbone(cfg, backbone):
    """With SCORE_RESIZE and GRID (): a size the backbone pads (size_divisibility) would
    leave padding the scorer cannot crop without a grid."""
    resize, divisor = score_resize(cfg), int(getattr(backbone, "size_divisibility", 0) or 0)
    if resize is None or scorer_grid(cfg) is not None or divisor <= 1:
        return
    if resize[0] % divisor or resize[1] % divisor:
        raise ValueError(
            f"IMAGE_SCORE.SCORE_RESIZE {resize} is not a multiple of the backbone's size "
            f"divisibility {divisor}: the images would be padded, and IMAGE_SCORE.GRID () "
            f"cannot crop padding away. Use multiples of {divisor}, or set IMAGE_SCORE.GRID.")


def fit_mask(cfg, model, labeled_dicts, seed=0, num_classes=None):
    """Fit the dataset mask(s) on the labeled images (backbone only, every rank).

    The mask is fitted on ``fit_subsample(labeled_dicts, IMAGE_SCORE.FIT_MAX_IMAGES,
    fit_seed(cfg, seed))``; ``seed`` is the run's seed. ``num_classes`` K: per-class masks,
    each labeled dict carrying its class as :data:`SCORE_CLASS` (dicts whose class is None
    are left out of the fit). The per-layer sums are all-reduced across ranks. A labeled
    image that cannot be used raises (on every rank, after the all-reduce). Returns the
    fitted ``ImageScorer``.
    """
    backbone = model.backbone
    settings = cfg.IMAGE_SCORE
    _check_resize_fits_backbone(cfg, backbone)
    total, subsample_seed = len(labeled_dicts), fit_seed(cfg, seed)
    labeled_dicts = fit_subsample(labeled_dicts, settings.FIT_MAX_IMAGES, subsample_seed)
    logger.info("Fitting the dataset mask on %d of %d labeled images (seed %d): subsample "
                "digest %s", len(labeled_dicts), total, subsample_seed,
                subsample_digest(labeled_dicts))
    if num_classes is not None:
        labeled_dicts = [d for d in labeled_dicts if d.get(SCORE_CLASS) is not None]
        if not labeled_dicts:
            raise ValueError("No labeled image has a class to fit a per-class mask on (every "
                             "one is without ground-truth boxes); check the labeled datasets.")
    # batch size > 1: batch images of one size together (no padding, see engine/batching.py);
    # with SCORE_RESIZE every image has one size already
    if settings.BATCH_SIZE > 1 and score_resize(cfg) is None:
        labeled_dicts = [labeled_dicts[i] for i in size_order(cfg, labeled_dicts)]
    scorer = ImageScorer(backbone, layers=layers_from_cfg(cfg, backbone),
                         similarity=settings.SIMILARITY, threshold_ratio=settings.THRESHOLD_RATIO,
                         grid=scorer_grid(cfg), num_classes=num_classes)
    world = comm.get_world_size()
    if len(labeled_dicts) < world:
        # every rank must fit on at least one image to take part in the all-reduce
        raise ValueError(f"{len(labeled_dicts)} labeled images cannot be shared by {world} "
                         "processes; use fewer processes or more labeled images.")
    seen, failures = [], []
    with FiniteWatch(backbone, _watched_layers(scorer)) as watch, inference_autocast(cfg, model):
        scorer.fit(_backbone_batches(model, _score_loader(cfg, labeled_dicts), seen,
                                     "fit mask", failures, per_class=num_classes is not None),
                   all_reduce=_all_reduce_sum)
    _gather_in_order([(i, True) for batch in seen for i in batch], len(labeled_dicts),
                     failures + watch.non_finite(seen), None, labeled_dicts,
                     "labeled set (the dataset mask is fitted on it)")
    return scorer


def score_pool(cfg, model, scorer, pool_dicts, skipped=None):
    """Score ``pool_dicts`` with the fitted ``scorer`` (backbone only, sharded, every rank).

    Per-class scorer: each dict carries its (predicted) class as :data:`SCORE_CLASS`.
    Returns float64 scores in pool order. ``skipped``: a dict that receives
    ``{pool index: reason}`` of the images that could not be scored (their score is NaN);
    None raises ``BadImageError`` instead.
    """
    settings = cfg.IMAGE_SCORE
    pool_order = (size_order(cfg, pool_dicts)
                  if settings.BATCH_SIZE > 1 and score_resize(cfg) is None else None)
    if pool_order is not None:
        pool_dicts = [pool_dicts[i] for i in pool_order]
    pairs, failures = [], []
    if _shard_size(len(pool_dicts), comm.get_rank(), comm.get_world_size()) > 0:
        order = []  # else nothing to score here
        with FiniteWatch(model.backbone, _watched_layers(scorer)) as watch, \
                inference_autocast(cfg, model):
            batches = _nonempty(_backbone_batches(
                model, _score_loader(cfg, pool_dicts), order, "score", failures,
                per_class=scorer.num_classes is not None))
            scores = scorer.score(batches).tolist() if batches is not None else []
        bad = dict(watch.non_finite(order))
        failures += list(bad.items())
        pairs = [(i, s) for i, s in zip((i for batch in order for i in batch), scores)
                 if i not in bad]
    found = None if skipped is None else {}
    values = _gather_in_order(pairs, len(pool_dicts), failures, found, pool_dicts)
    values = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if pool_order is not None:  # back to the caller's pool order
        values[np.asarray(pool_order, dtype=np.int64)] = values.copy()
    if skipped is not None:
        skipped.update({int(pool_order[i]) if pool_order is not None else i: reason
                        for i, reason in found.items()})
    return values


def image_scores(cfg, model, labeled_dicts, pool_dicts, skipped=None, seed=0):
    """Fit the dataset mask on ``labeled_dicts`` and score ``pool_dicts`` (:func:`fit_mask`,
    then :func:`score_pool`; only the backbone runs, under ``inference_autocast``).

    Returns (scores in pool order, fitted scorer, seconds). ``skipped``: a dict that
    receives ``{pool index: reason}`` of the pool images that could not be scored (their
    score is NaN); None raises ``BadImageError`` instead. A labeled image that cannot be
    used always raises.
    """
    t0 = time.perf_counter()
    scorer = fit_mask(cfg, model, labeled_dicts, seed=seed)
    scores = score_pool(cfg, model, scorer, pool_dicts, skipped=skipped)
    return scores, scorer, time.perf_counter() - t0


def predict(cfg, model, dicts, desc="pseudo-label", skipped=None):
    """Full detector inference on ``dicts``; per image {boxes, scores, classes} (numpy).

    ``skipped``: a dict that receives ``{index: reason}`` of the images that could not be
    read or gave a non-finite backbone activation (their prediction is None); None raises
    ``BadImageError`` instead.
    """
    t0 = time.perf_counter()
    results, failures = [], []
    with torch.no_grad(), FiniteWatch(getattr(model, "backbone", None)) as watch, \
            inference_autocast(cfg, model):
        for batch in _progress(_loader(cfg, dicts), desc):
            batch = split_batch(batch, failures)
            if not batch:
                continue
            calls = len(watch.flags)
            outputs = model(batch)
            finite = watch.flags[-1] if len(watch.flags) > calls else [True] * len(batch)
            for image, out, ok in zip(batch, outputs, finite):
                if not ok:
                    failures.append((image["pool_index"], NON_FINITE))
                    continue
                inst = out["instances"].to("cpu")
                results.append((image["pool_index"], {  # .double(): NumPy has no bfloat16
                    "boxes": inst.pred_boxes.tensor.double().numpy(),
                    "scores": inst.scores.double().numpy(),
                    "classes": inst.pred_classes.numpy().astype(np.int64)}))
            fault_point(desc)  # test-only kill point (IMAGESCORE_FAULT=pseudo_label, ...)
    return (_gather_in_order(results, len(dicts), failures, skipped, dicts),
            time.perf_counter() - t0)


def softmax_confidence(predictions, score_thresh):
    """The softmax baseline's image confidence.

    The mean score of the boxes that would become pseudo-labels (score >= ``score_thresh``);
    an image with none ranks below every image that has some, by its best box score (-1 when
    it has no detection at all).
    """
    out = []
    for prediction in predictions:
        box_scores = np.asarray(prediction["scores"], dtype=np.float64)
        kept = box_scores[box_scores >= score_thresh]
        if len(kept):
            out.append(float(kept.mean()))
        else:
            out.append(float(box_scores.max()) - 1.0 if len(box_scores) else -1.0)
    return np.asarray(out, dtype=np.float64)


def lowest_image_score(num_layers):
    """The lowest score an image can get from a scorer with ``num_layers`` layers: every
    term is ``log(max(r, RATIO_FLOOR)) >= log(RATIO_FLOOR)`` (a skipped layer adds 0)."""
    return num_layers * math.log(RATIO_FLOOR)


def below_every_image_score(num_layers):
    """A finite score below every score of a ``num_layers``-layer scorer (rank_pool refuses
    non-finite scores): :func:`lowest_image_score` minus 1."""
    return lowest_image_score(num_layers) - 1.0


def confidence_filtered_scores(image_score, confidence, min_confidence, num_layers):
    """The hybrid selector's ranking: "confidence filter, image-score rank".

    An image whose ``confidence`` (the softmax selector's) is ``>= min_confidence`` keeps its
    Image Score; any other image gets its Image Score minus ``1 - lowest_image_score``, which
    puts it below every passing image (Image Scores lie in [lowest_image_score, 0]) and keeps
    the failing images in Image Score order among themselves. NaN stays NaN.
    """
    image_score = np.asarray(image_score, dtype=np.float64)
    passed = np.asarray(confidence, dtype=np.float64) >= min_confidence
    return np.where(passed, image_score, image_score + below_every_image_score(num_layers))


def largest_box_class(dataset_dict):
    """The class a labeled image is fitted under in per-class mode: the ``category_id`` of
    its largest ground-truth box by area (in the image's pixels; the first such box in
    annotation order on a tie). None when it has no box."""
    best, best_area = None, -1.0
    for ann in dataset_dict.get("annotations", ()):
        x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
        if area > best_area:
            best, best_area = int(ann["category_id"]), area
    return best


def top_box_class(prediction, score_thresh):
    """The class a pool image is scored under in per-class mode: that of its most confident
    predicted box with score >= ``score_thresh`` (the first in the detector's output order on
    a tie). None when no box is kept."""
    box_scores = np.asarray(prediction["scores"], dtype=np.float64)
    if not len(box_scores) or box_scores.max() < score_thresh:
        return None
    return int(np.asarray(prediction["classes"])[int(np.argmax(box_scores))])


def per_class_image_scores(cfg, model, labeled_dicts, pool_dicts, predictions, skipped=None,
                           seed=0):
    """Per-class Image Score of ``pool_dicts`` (``image_score_per_class``).

    Masks are fitted per class (K = ``MODEL.ROI_HEADS.NUM_CLASSES``; :func:`fit_mask`), each
    labeled image under :func:`largest_box_class` (images without a box are left out). Each
    pool image is scored against the mask of :func:`top_box_class` of its prediction at
    ``IMAGE_SCORE.BOX_SCORE_THRESH``. An image without a kept box, or whose class no fitted
    image had, gets :func:`below_every_image_score` (ranks last, ties by pool order).
    ``predictions``: per pool image (None: it could not be read; its score is NaN).

    Returns (scores in pool order, fitted scorer, number of pool images without a mask to
    score against, seconds).
    """
    t0 = time.perf_counter()
    num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    labeled = [dict(d, **{SCORE_CLASS: largest_box_class(d)}) for d in labeled_dicts]
    with warnings.catch_warnings():
        # the scorer warns that scoring a class without images raises; here such pool
        # images are not scored (they rank last), so say that instead
        warnings.filterwarnings("ignore", message="ImageScorer: no fitted image has class")
        scorer = fit_mask(cfg, model, labeled, seed=seed, num_classes=num_classes)
    fitted = scorer.class_counts > 0
    if not bool(fitted.all()):
        logger.info("Per-class masks: no labeled image has its largest box in class(es) %s; "
                    "pool images predicted as them rank last",
                    (~fitted).nonzero().flatten().tolist())
    scores = np.full(len(pool_dicts), np.nan)
    chosen, classes = [], []
    for index, prediction in enumerate(predictions):
        if prediction is None:
            continue  # unreadable: in skipped already (predict recorded it)
        label = top_box_class(prediction, cfg.IMAGE_SCORE.BOX_SCORE_THRESH)
        if label is None or not bool(fitted[label]):
            scores[index] = below_every_image_score(len(scorer.layer_names))
        else:
            chosen.append(index)
            classes.append(label)
    found = None if skipped is None else {}
    scores[np.asarray(chosen, dtype=np.int64)] = score_pool(cfg, model, scorer,
                                [dict(pool_dicts[i], **{SCORE_CLASS: c})
                                 for i, c in zip(chosen, classes)], skipped=found)
    if skipped is not None:
        skipped.update({chosen[i]: reason for i, reason in found.items()})
    unscored = int(len(predictions) - len(chosen) - sum(p is None for p in predictions))
    return scores, scorer, unscored, time.perf_counter() - t0


def random_scores(n, seed):
    """A uniformly random ranking (identical on every rank for the same seed)."""
    return np.random.default_rng(seed).random(n)
