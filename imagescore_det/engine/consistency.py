"""What keeps a run consistent: the settings a saved round depends on, the selection seed,
rank-0 reads shared with every rank, and the checks that can run before training."""
import hashlib
import os

import numpy as np

from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from .config_loading import ConfigError
from .selectors import uses_image_score_passes


# What a round's selection and pseudo-labels depend on, besides the model's weights.
FINGERPRINT_KEYS = (
    "IMAGE_SCORE.SELECTOR", "IMAGE_SCORE.UNLABELED_DATASETS", "IMAGE_SCORE.LABELED_DATASETS",
    "IMAGE_SCORE.START_ITER", "IMAGE_SCORE.REFRESH_PERIOD", "IMAGE_SCORE.NUM_ROUNDS",
    "IMAGE_SCORE.TOP_FRACTION",
    "IMAGE_SCORE.BOX_SCORE_THRESH", "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "IMAGE_SCORE.BACKFILL",
    "IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS", "IMAGE_SCORE.PSEUDO_NMS_THRESH",
    "IMAGE_SCORE.LAYERS", "IMAGE_SCORE.SIMILARITY", "IMAGE_SCORE.THRESHOLD_RATIO",
    "IMAGE_SCORE.GRID", "IMAGE_SCORE.SCORE_RESIZE", "IMAGE_SCORE.HYBRID_MIN_CONFIDENCE",
    "IMAGE_SCORE.BATCH_SIZE", "IMAGE_SCORE.SEED", "SEED",
    "IMAGE_SCORE.FIT_MAX_IMAGES", "IMAGE_SCORE.FIT_SEED", "SOLVER.AMP.ENABLED",
    "DATASETS.TRAIN", "MODEL.META_ARCHITECTURE", "MODEL.BACKBONE.NAME", "MODEL.WEIGHTS",
    "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST", "MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST",
    "MODEL.RPN.NMS_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST", "TEST.DETECTIONS_PER_IMAGE",
)


def fingerprint_items(cfg):
    """``{key: repr(value)}`` of every config key in :data:`FINGERPRINT_KEYS`."""
    items = {}
    for key in FINGERPRINT_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        items[key] = repr(tuple(node) if isinstance(node, list) else node)
    return items


def config_fingerprint(cfg):
    """A short hash of :func:`fingerprint_items`: a resumed run reuses a saved round only if
    it is equal."""
    return hashlib.sha256(repr(sorted(fingerprint_items(cfg).items())).encode()).hexdigest()[:16]


def check_round_belongs_to_run(manifest, cfg, directory):
    """Stop, saying what changed and how to go on, when a saved round was made with
    settings other than ``cfg``'s."""
    if manifest.fingerprint == config_fingerprint(cfg):
        return
    saved, now = manifest.fingerprint_items or {}, fingerprint_items(cfg)
    changed = [f"{key}: {saved.get(key, '(not recorded)')} when the round was made, "
               f"{now[key]} now" for key in FINGERPRINT_KEYS if saved.get(key) != now[key]]
    raise RuntimeError(
        f"Selection round {manifest.round} in {directory} was made with other settings than "
        "this run's:\n  " + "\n  ".join(changed or ["(the round predates the recorded keys)"])
        + f"\nResume with the original settings (the run's config is saved as "
        f"{os.path.join(cfg.OUTPUT_DIR, 'config.yaml')}), or delete {directory} (and any later "
        "round) to select again with the new settings from the last checkpoint, or train in a "
        "new OUTPUT_DIR.")


def draw_seed():
    """A seed drawn on rank 0, the same on every rank (for ``SEED -1``)."""
    return int(comm.all_gather(int(np.random.SeedSequence().entropy % (2 ** 31)))[0])


def run_seed(cfg, recorded=None):
    """The run's seed of selection: ``SEED``, else ``recorded`` (the seed this run drew
    before it was stopped, restored from its checkpoint), else a new :func:`draw_seed`.

    What it seeds, each unless its own key is set (``engine/selection.py``): the mask's
    ``FIT_MAX_IMAGES`` subsample (``IMAGE_SCORE.FIT_SEED``) and the random selector's
    stream (``IMAGE_SCORE.SEED``).
    """
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    return int(recorded) if recorded is not None else draw_seed()


def from_rank0(read):
    """``read()`` on rank 0 only, its result (or its error) given to every rank, so that no
    rank decides from its own disk (OUTPUT_DIR need not be shared across machines)."""
    if comm.get_world_size() == 1:
        return read()
    answer = None
    if comm.is_main_process():
        try:
            answer = ("ok", read())
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            answer = ("error", e)
    status, value = comm.all_gather(answer)[0]
    if status == "error":
        raise value
    return value


def needs_equal_sizes(cfg):
    """Whether the run needs every image to have one test-time input size: a selector with
    image-score passes, ``IMAGE_SCORE.GRID ()`` (no pooling) and no ``SCORE_RESIZE`` (which
    gives every image one size by itself)."""
    settings = cfg.IMAGE_SCORE
    return (uses_image_score_passes(settings.SELECTOR) and not len(settings.GRID)
            and not len(settings.SCORE_RESIZE))


def check_equal_sizes(cfg, dicts, what):
    """With ``IMAGE_SCORE.GRID ()`` every image's maps must have one size: the test-time
    resized size of every image must be the same."""
    from detectron2.data.transforms import ResizeShortestEdge

    sizes = {ResizeShortestEdge.get_output_shape(d["height"], d["width"], cfg.INPUT.MIN_SIZE_TEST,
                                                 cfg.INPUT.MAX_SIZE_TEST) for d in dicts}
    if len(sizes) > 1:
        raise ConfigError(
            f"IMAGE_SCORE.GRID is () but the {what} has {len(sizes)} different input sizes after "
            f"the test resize (e.g. {sorted(sizes)[:3]}): activation maps would not line up. Set "
            "IMAGE_SCORE.GRID (16, 16) (maps are cropped to each image and pooled to the grid), "
            "or IMAGE_SCORE.SCORE_RESIZE (h, w) (every image resized to exactly h x w).")


def load_datasets(names, what):
    """The dataset dicts of registered datasets, concatenated (none at all is an error)."""
    dicts = []
    for name in names:
        dicts.extend(DatasetCatalog.get(name))
    if not dicts:
        raise ValueError(f"The {what} {tuple(names)} has no images: check the datasets' "
                         "split files.")
    return dicts
