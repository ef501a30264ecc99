"""Running the selectors over an unlabeled pool, sharded across ranks.

Every function here is called on every rank (like Detectron2's ``inference_on_dataset``) and
returns the same result on every rank: each rank processes a contiguous shard of the images
(Detectron2's ``InferenceSampler``) and the results are all-gathered in pool order.
"""
import logging
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.utils import comm

from ..scoring import ImageBatch, ImageScorer
from .amp import inference_autocast
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


def _loader(cfg, dicts):
    indexed = [dict(d, pool_index=i) for i, d in enumerate(dicts)]
    return build_detection_test_loader(
        indexed, mapper=DatasetMapper(cfg, is_train=False),
        batch_size=cfg.IMAGE_SCORE.BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS)


def _progress(loader, desc):
    return tqdm(loader, desc=desc, disable=not comm.is_main_process(), mininterval=5,
                unit="batch")


def _shard_size(n, rank, world):
    """Images of ``n`` that Detectron2's InferenceSampler gives ``rank``."""
    return n // world + int(rank < n % world)


def _gather_in_order(index_value_pairs, n):
    """All-gather (pool index, value) pairs of every rank into a list in pool order."""
    out = [None] * n
    for part in comm.all_gather(index_value_pairs):
        for index, value in part:
            out[index] = value
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        raise RuntimeError(f"{len(missing)} pool images got no result (first: {missing[:5]})")
    return out


def _all_reduce_sum(t):
    if comm.get_world_size() > 1:
        # gloo and NCCL both reduce float64 tensors; NCCL needs them on the GPU
        dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
        buf = t.to(dev)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        t.copy_(buf.to(t.device))


def _backbone_batches(model, loader, sink, desc):
    for batch in _progress(loader, desc):
        images = model.preprocess_image(batch)
        sink.extend(image["pool_index"] for image in batch)
        yield ImageBatch(inputs=images.tensor, valid_sizes=[tuple(size) for size in images.image_sizes])


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


def fit_seed(cfg, seed):
    """``IMAGE_SCORE.FIT_SEED``, or the run's seed ``seed`` when it is -1."""
    return int(cfg.IMAGE_SCORE.FIT_SEED) if cfg.IMAGE_SCORE.FIT_SEED >= 0 else int(seed)


def image_scores(cfg, model, labeled_dicts, pool_dicts, seed=0):
    """Fit the dataset mask on ``labeled_dicts`` and score ``pool_dicts``.

    Only the backbone runs (under ``inference_autocast``). The mask is fitted on
    ``fit_subsample(labeled_dicts, IMAGE_SCORE.FIT_MAX_IMAGES, fit_seed(cfg, seed))``;
    ``seed`` is the run's seed. Returns (scores in pool order, fitted scorer, seconds).
    """
    t0 = time.perf_counter()
    backbone = model.backbone
    settings = cfg.IMAGE_SCORE
    labeled_dicts = fit_subsample(labeled_dicts, settings.FIT_MAX_IMAGES, fit_seed(cfg, seed))
    # batch size > 1: batch images of one size together (no padding, see engine/batching.py)
    pool_order = size_order(cfg, pool_dicts) if settings.BATCH_SIZE > 1 else None
    if pool_order is not None:
        labeled_dicts = [labeled_dicts[i] for i in size_order(cfg, labeled_dicts)]
        pool_dicts = [pool_dicts[i] for i in pool_order]
    scorer = ImageScorer(backbone, layers=layers_from_cfg(cfg, backbone),
                         similarity=settings.SIMILARITY, threshold_ratio=settings.THRESHOLD_RATIO,
                         grid=tuple(settings.GRID) if len(settings.GRID) else None)
    world = comm.get_world_size()
    if len(labeled_dicts) < world:
        # every rank must fit on at least one image to take part in the all-reduce
        raise ValueError(f"{len(labeled_dicts)} labeled images cannot be shared by {world} "
                         "processes; use fewer processes or more labeled images.")
    seen = []
    with inference_autocast(cfg, model):
        scorer.fit(_backbone_batches(model, _loader(cfg, labeled_dicts), seen, "fit mask"),
                   all_reduce=_all_reduce_sum)
    pairs = []
    if _shard_size(len(pool_dicts), comm.get_rank(), world) > 0:  # else nothing to score here
        order = []
        with inference_autocast(cfg, model):
            scores = scorer.score(_backbone_batches(model, _loader(cfg, pool_dicts), order,
                                                    "score"))
        pairs = list(zip(order, scores.tolist()))
    values = np.asarray(_gather_in_order(pairs, len(pool_dicts)), dtype=np.float64)
    if pool_order is not None:  # back to the caller's pool order
        values[np.asarray(pool_order, dtype=np.int64)] = values.copy()
    return values, scorer, time.perf_counter() - t0


def predict(cfg, model, dicts, desc="pseudo-label"):
    """Full detector inference on ``dicts``; per image {boxes, scores, classes} (numpy)."""
    t0 = time.perf_counter()
    results = []
    with torch.no_grad(), inference_autocast(cfg, model):
        for batch in _progress(_loader(cfg, dicts), desc):
            for image, out in zip(batch, model(batch)):
                inst = out["instances"].to("cpu")
                results.append((image["pool_index"], {  # .double(): NumPy has no bfloat16
                    "boxes": inst.pred_boxes.tensor.double().numpy(),
                    "scores": inst.scores.double().numpy(),
                    "classes": inst.pred_classes.numpy().astype(np.int64)}))
    return _gather_in_order(results, len(dicts)), time.perf_counter() - t0


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


def random_scores(n, seed):
    """A uniformly random ranking (identical on every rank for the same seed)."""
    return np.random.default_rng(seed).random(n)
