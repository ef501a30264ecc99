"""Loading a config with errors that name the file or key and the fix."""
import difflib
import os

import torch
from yacs.config import CfgNode as _YacsNode

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

from ..config import add_imagescore_config
from ..data.coco import DatasetConfigError, check_class_agreement, register_config_datasets
from ..scoring.scorer import SIMILARITIES
from .selectors import NO_SELECTION, config_selector_names


class ConfigError(ValueError):
    """A config file, key or value that cannot work; the message says how to fix it."""


def _all_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, _YacsNode):
            yield from _all_keys(value, prefix + key + ".")
        else:
            yield prefix + key


def _unknown_key_error(cfg, exc, where):
    msg = str(exc.args[0]) if exc.args else str(exc)
    key = msg.split(":", 1)[1].strip() if ":" in msg else msg
    close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"Unknown config key '{key}' in {where}.{hint} "
                       "(imagescore-det's own keys are under IMAGE_SCORE, MODEL.VGG and "
                       "DATASETS.REGISTER; "
                       "see imagescore_det/config.py.)")


def _bad_value_error(exc, where):
    """yacs' type-mismatch ValueError, with where it happened and how to write the value."""
    msg = str(exc.args[0]) if exc.args else str(exc)
    if "Type mismatch" not in msg:
        return ConfigError(f"{msg} (in {where})")
    return ConfigError(f"{msg} (in {where}). A value must have the type of the default: write "
                       "floats with a decimal point (1.0, not 1), lists/tuples as (a, b) or "
                       "[a, b], strings in quotes where YAML would read them otherwise.")


def get_imagescore_cfg():
    """Detectron2's default config plus imagescore-det's keys."""
    cfg = get_cfg()
    add_imagescore_config(cfg)
    return cfg


def load_config(config_file, opts=(), cfg=None):
    """Merge ``config_file`` and ``KEY VALUE`` ``opts`` into a fresh config and check it."""
    cfg = cfg if cfg is not None else get_imagescore_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"Config file '{config_file}' does not exist. Pass one of the "
                              "files under configs/ (e.g. configs/synthetic/...) to --config-file.")
        where = f"config file '{config_file}' (or a _BASE_ of it)"
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise _unknown_key_error(cfg, e, where) from None
        except ValueError as e:
            raise _bad_value_error(e, where) from None
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"Command-line overrides come in KEY VALUE pairs; got {list(opts)}")
        where = "the command-line overrides"
        try:
            cfg.merge_from_list(list(opts))
        except KeyError as e:
            raise _unknown_key_error(cfg, e, where) from None
        except AssertionError as e:  # yacs asserts "Non-existent key: ..." for KEY VALUE lists
            if "Non-existent key" not in str(e):
                raise
            raise _unknown_key_error(cfg, e, where) from None
        except ValueError as e:
            raise _bad_value_error(e, where) from None
    try:  # DATASETS.REGISTER: before anything looks the datasets up
        register_config_datasets(cfg)
    except DatasetConfigError as e:
        source = ("the command-line overrides" if "DATASETS.REGISTER" in list(opts)[::2]
                  else f"config file '{config_file}'")
        raise ConfigError(f"{e} (DATASETS.REGISTER in {source})") from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"  # the default is "cuda"; a CPU-only machine runs on the CPU
    check_config(cfg, config_file)
    return cfg


def check_config(cfg, where="the config"):
    """Checks that would otherwise fail late (after training time is spent) or silently."""
    settings = cfg.IMAGE_SCORE
    _check_selection("IMAGE_SCORE", settings, where, "",
                     "fraction of the unlabeled pool to pseudo-label")
    if settings.ON_BAD_IMAGE not in ("skip", "error"):
        raise ConfigError(f"IMAGE_SCORE.ON_BAD_IMAGE is '{settings.ON_BAD_IMAGE}' in {where}; use "
                          "skip (leave unusable pool images out, listed in skipped.csv) or error.")
    if settings.SIMILARITY not in SIMILARITIES:
        raise ConfigError(f"IMAGE_SCORE.SIMILARITY is '{settings.SIMILARITY}' in {where}; use one of "
                          f"{', '.join(SIMILARITIES)}.")
    if settings.ENABLED and settings.SELECTOR != NO_SELECTION:
        if not settings.UNLABELED_DATASETS:
            raise ConfigError(f"IMAGE_SCORE.ENABLED is on in {where} but "
                              "IMAGE_SCORE.UNLABELED_DATASETS is empty; name the registered "
                              "datasets of the unlabeled pool, e.g. (\"voc_2012_trainval\",).")
        if settings.MIN_BOXES_PER_IMAGE == 0 and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            raise ConfigError(
                f"IMAGE_SCORE.MIN_BOXES_PER_IMAGE is 0 in {where}: pseudo-labeled images without "
                "a box are meant to train as background, but DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                "is True, so Detectron2 would drop them. Set DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                "False to train them as background, or MIN_BOXES_PER_IMAGE 1 to leave them out.")
        if not 0 <= settings.START_ITER < cfg.SOLVER.MAX_ITER:
            raise ConfigError(f"IMAGE_SCORE.START_ITER={settings.START_ITER} must be in "
                              f"[0, SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}) in {where}.")
    if settings.PAIRED_BASELINE and not (settings.ENABLED
                                         and 0 < settings.START_ITER < cfg.SOLVER.MAX_ITER):
        raise ConfigError(f"IMAGE_SCORE.PAIRED_BASELINE is on in {where}, but the supervised-only "
                          "copy starts at the round: it needs IMAGE_SCORE.ENABLED True and "
                          f"0 < IMAGE_SCORE.START_ITER={settings.START_ITER} < "
                          f"SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}.")
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference and cfg.SOLVER.IMS_PER_BATCH % reference:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not a multiple of "
                          f"SOLVER.REFERENCE_WORLD_SIZE={reference} in {where}: the batch is "
                          "split evenly over the reference number of GPUs. Fix one of them, or "
                          "set SOLVER.REFERENCE_WORLD_SIZE 0 to turn off automatic scaling.")
    if settings.REFRESH_PERIOD < 0:
        raise ConfigError(f"IMAGE_SCORE.REFRESH_PERIOD must be >= 0 in {where}.")
    if settings.NUM_ROUNDS < 0:
        raise ConfigError(f"IMAGE_SCORE.NUM_ROUNDS is {settings.NUM_ROUNDS} in {where}; use 0 "
                          "(a round every REFRESH_PERIOD until MAX_ITER) or N > 0 (at most N).")
    if settings.FIT_MAX_IMAGES < 0:
        raise ConfigError(f"IMAGE_SCORE.FIT_MAX_IMAGES is {settings.FIT_MAX_IMAGES} in {where}; "
                          "use 0 to fit the mask on every labeled image, or N > 0 for a seeded "
                          "subsample of N of them.")
    if settings.BATCH_SIZE < 1:
        raise ConfigError(f"IMAGE_SCORE.BATCH_SIZE is {settings.BATCH_SIZE} in {where}; it is "
                          "the number of images per forward pass and must be >= 1.")
    if len(settings.GRID) not in (0, 2):
        raise ConfigError(f"IMAGE_SCORE.GRID must be (h, w) or () in {where}.")
    if not _is_size(settings.SCORE_RESIZE):
        raise ConfigError(
            f"IMAGE_SCORE.SCORE_RESIZE is {tuple(settings.SCORE_RESIZE)} in {where}; write () "
            "to keep the test-time resize, or (h, w), two positive ints (e.g. (224, 224)), to "
            "resize every image to exactly h x w for the image-score passes.")
    confidence = settings.HYBRID_MIN_CONFIDENCE
    if not (isinstance(confidence, (int, float)) and 0.0 <= confidence <= 1.0):
        raise ConfigError(
            f"IMAGE_SCORE.HYBRID_MIN_CONFIDENCE is {confidence!r} in {where}; it is the softmax "
            "confidence (a mean box score) a pool image needs to rank among the passing "
            "images of the hybrid selector, and must be in [0, 1] (e.g. 0.7).")
    check_split(cfg, where)
    check_teacher_config(cfg, where)
    check_class_count(cfg, where)


def check_split(cfg, where="the config"):
    """``IMAGE_SCORE.SPLIT``'s settings; registers the split's two datasets (lazily) so the
    config may name them."""
    from ..data.split import register_split

    split = cfg.IMAGE_SCORE.SPLIT
    if not split.DATASET:
        if split.PERCENT or split.COUNT:
            raise ConfigError(f"IMAGE_SCORE.SPLIT.PERCENT / COUNT is set in {where} but "
                              "IMAGE_SCORE.SPLIT.DATASET is empty; name the registered dataset "
                              "to split (e.g. synthetic_voc_trainval), or leave both at 0.")
        return
    from detectron2.data import DatasetCatalog

    if split.DATASET not in DatasetCatalog.list():
        raise ConfigError(
            f"IMAGE_SCORE.SPLIT.DATASET '{split.DATASET}' in {where} is not a registered "
            f"dataset. Registered datasets close to it: "
            f"{difflib.get_close_matches(split.DATASET, DatasetCatalog.list(), n=5)}.")
    if split.COUNT < 0 or (split.COUNT and split.PERCENT):
        raise ConfigError(f"IMAGE_SCORE.SPLIT has PERCENT {split.PERCENT} and COUNT "
                          f"{split.COUNT} in {where}; set one of them (PERCENT in (0, 100), "
                          "or COUNT >= 1) and leave the other at 0.")
    if not split.COUNT and not 0.0 < split.PERCENT < 100.0:
        raise ConfigError(
            f"IMAGE_SCORE.SPLIT.PERCENT is {split.PERCENT} in {where}; the labeled percentage "
            "of IMAGE_SCORE.SPLIT.DATASET must be in (0, 100), e.g. 10.0 (write the decimal "
            "point), or set IMAGE_SCORE.SPLIT.COUNT to a number of labeled images.")
    register_split(split.DATASET, split.PERCENT, split.COUNT, split.SEED)


def _check_selection(prefix, settings, where, none_means, fraction_means):
    """``<prefix>.SELECTOR`` is registered and ``<prefix>.TOP_FRACTION`` in (0, 1]."""
    if settings.SELECTOR not in config_selector_names():
        raise ConfigError(f"{prefix}.SELECTOR is '{settings.SELECTOR}' in {where}; use one of "
                          f"{', '.join(config_selector_names())}{none_means}.")
    if not 0.0 < settings.TOP_FRACTION <= 1.0:
        raise ConfigError(f"{prefix}.TOP_FRACTION is {settings.TOP_FRACTION} in {where}; it is the "
                          f"{fraction_means} and must be in (0, 1].")


def check_teacher_config(cfg, where="the config"):
    """The ``TEACHER`` keys (online teacher-student mode, ``imagescore_det/teacher``)."""
    settings = cfg.TEACHER
    if not settings.ENABLED:
        return
    if cfg.IMAGE_SCORE.ENABLED:
        raise ConfigError(f"TEACHER.ENABLED and IMAGE_SCORE.ENABLED are both on in {where}: the "
                          "online teacher-student mode and the offline selection round are two "
                          "different runs. Turn one of them off.")
    keep = settings.EMA_KEEP_RATE
    if not (isinstance(keep, float) and 0.0 < keep < 1.0):
        raise ConfigError(f"TEACHER.EMA_KEEP_RATE is {keep!r} in {where}; the teacher keeps this "
                          "share of itself at every step (teacher = k * teacher + (1 - k) * "
                          "student), so it must be in (0, 1), e.g. 0.9996.")
    thresh = settings.SCORE_THRESH
    if not (isinstance(thresh, (int, float)) and 0.0 <= thresh <= 1.0):
        raise ConfigError(f"TEACHER.SCORE_THRESH is {thresh!r} in {where}; it is the score a "
                          "teacher box needs to become a target and must be in [0, 1] (e.g. 0.7).")
    if not settings.UNLABELED_PER_LABELED > 0:
        raise ConfigError(f"TEACHER.UNLABELED_PER_LABELED is {settings.UNLABELED_PER_LABELED} in "
                          f"{where}; the mode needs unlabeled images in every step: use a ratio "
                          "> 0 (1.0 = one unlabeled image per labeled one), or TEACHER.ENABLED "
                          "False for supervised training.")
    if settings.UNSUP_LOSS_WEIGHT < 0:
        raise ConfigError(f"TEACHER.UNSUP_LOSS_WEIGHT is {settings.UNSUP_LOSS_WEIGHT} in {where}; "
                          "use a weight >= 0 (Unbiased Teacher's VOC setting: 2.0).")
    if settings.FOCAL_GAMMA < 0:
        raise ConfigError(f"TEACHER.FOCAL_GAMMA is {settings.FOCAL_GAMMA} in {where}; use 0.0 for "
                          "Detectron2's cross entropy or a gamma > 0 (Unbiased Teacher: 1.5).")
    if not 0 <= settings.BURN_IN_ITER < cfg.SOLVER.MAX_ITER:
        raise ConfigError(f"TEACHER.BURN_IN_ITER={settings.BURN_IN_ITER} must be in "
                          f"[0, SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}) in {where}: the teacher "
                          "trains the student only after the burn-in.")
    if settings.REFRESH < 0:
        raise ConfigError(f"TEACHER.REFRESH is {settings.REFRESH} in {where}; use 0 to rank the "
                          "pool once at the end of the burn-in, or N > 0 to rank it every N "
                          "iterations.")
    if settings.NUM_REFRESHES < 0:
        raise ConfigError(f"TEACHER.NUM_REFRESHES is {settings.NUM_REFRESHES} in {where}; use 0 "
                          "(a ranking every REFRESH iterations until MAX_ITER) or N > 0 (at "
                          "most N).")
    if settings.TARGETS not in ("teacher", "truth"):
        raise ConfigError(f"TEACHER.TARGETS is {settings.TARGETS!r} in {where}; use \"teacher\" "
                          "(the teacher's boxes, the method) or \"truth\" (the pool's own "
                          "annotations: the upper bound).")
    if settings.PAIRED_BASELINE and settings.SUPERVISED_ONLY:
        raise ConfigError(f"TEACHER.PAIRED_BASELINE and TEACHER.SUPERVISED_ONLY are both on in "
                          f"{where}: the paired copy is itself the supervised-only run. Turn "
                          "TEACHER.SUPERVISED_ONLY off.")
    if settings.PAIRED_BASELINE and settings.BURN_IN_ITER < 1:
        raise ConfigError(f"TEACHER.PAIRED_BASELINE is on in {where} with TEACHER.BURN_IN_ITER="
                          f"{settings.BURN_IN_ITER}: the supervised-only copy starts from the "
                          "burn-in's checkpoint, so the burn-in needs at least 1 iteration.")
    _check_selection("TEACHER", settings, where, " ('none' = the whole pool)",
                     "fraction of the pool the unlabeled batches come from")
    if settings.RANK_WEIGHTING and settings.SELECTOR == NO_SELECTION:
        raise ConfigError(f"TEACHER.RANK_WEIGHTING is on in {where} with TEACHER.SELECTOR none: "
                          "the weights come from the teacher's ranking of the pool, and 'none' "
                          "ranks nothing. Either name a selector (e.g. TEACHER.SELECTOR "
                          "image_score, or random), or set TEACHER.RANK_WEIGHTING False.")
    if settings.RANK_WEIGHTING and settings.TOP_FRACTION != 1.0:
        raise ConfigError(f"TEACHER.RANK_WEIGHTING is on in {where} with TEACHER.TOP_FRACTION "
                          f"{settings.TOP_FRACTION}: the weighting trains every image of the "
                          "pool (weighted by its rank), a top fraction only some. Either set "
                          "TEACHER.TOP_FRACTION 1.0, or TEACHER.RANK_WEIGHTING False to train on "
                          "the top fraction alone.")
    if not cfg.IMAGE_SCORE.UNLABELED_DATASETS:
        raise ConfigError(f"TEACHER.ENABLED is on in {where} but IMAGE_SCORE.UNLABELED_DATASETS "
                          "(the unlabeled pool of both modes) is empty; name the registered "
                          "datasets of the pool, e.g. (\"voc_2012_trainval\",).")


def _is_size(value):
    """() or (h, w) of two positive ints (not bools)."""
    if len(value) == 0:
        return True
    return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                   for v in value)


def check_class_count(cfg, where="the config"):
    """MODEL.ROI_HEADS.NUM_CLASSES must match the datasets' class list."""
    from detectron2.data import DatasetCatalog

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) + list(
        cfg.IMAGE_SCORE.UNLABELED_DATASETS) + list(cfg.IMAGE_SCORE.LABELED_DATASETS)
    try:  # before the count check, so that the message names every list that differs
        check_class_agreement(names, where)
    except DatasetConfigError as e:
        raise ConfigError(str(e)) from None
    for name in names:
        if name not in DatasetCatalog.list():
            raise ConfigError(f"Dataset '{name}' named in {where} is not registered. Registered "
                              f"datasets close to it: {difflib.get_close_matches(name, DatasetCatalog.list(), n=5)}. "
                              "Register it (see datasets/README.md) or fix the name.")
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ConfigError(
                f"Dataset '{name}' has {len(classes)} classes {list(classes)} but "
                f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} in {where}. "
                f"Set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)} or use a dataset with the "
                "model's classes.")
