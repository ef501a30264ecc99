"""ImageScoreHook: when selection rounds happen, resume, and switching the trainer's data."""
import contextlib
import hashlib
import json
import logging
import os
import random

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data.pseudo import register_pseudo_dataset
from ..utils import atomic_write_json
from . import round_files
from .round import compute_round, summarize
from .selectors import NO_SELECTION

logger = logging.getLogger(__name__)


def round_iterations(cfg):
    """Iterations at which a selection round runs: START_ITER, then every REFRESH_PERIOD."""
    settings = cfg.IMAGE_SCORE
    if not settings.ENABLED or settings.SELECTOR == NO_SELECTION:
        return []
    if settings.REFRESH_PERIOD <= 0:
        return [settings.START_ITER]
    return list(range(settings.START_ITER, cfg.SOLVER.MAX_ITER, settings.REFRESH_PERIOD))


def config_fingerprint(cfg):
    """What a saved selection depends on (a resumed run reuses it only if this matches)."""
    keys = {"IMAGE_SCORE": cfg.IMAGE_SCORE, "TRAIN": cfg.DATASETS.TRAIN,
            "MODEL": cfg.MODEL.META_ARCHITECTURE, "BACKBONE": cfg.MODEL.BACKBONE.NAME,
            "INPUT_TEST": (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)}
    return hashlib.sha256(repr(keys).encode()).hexdigest()[:16]


def load_datasets(names, what):
    """The dataset dicts of registered datasets, concatenated (none at all is an error)."""
    dicts = []
    for name in names:
        dicts.extend(DatasetCatalog.get(name))
    if not dicts:
        raise ValueError(f"The {what} {tuple(names)} has no images: check the datasets' "
                         "split files.")
    return dicts


class ImageScoreHook(HookBase):
    """At each round iteration: score the unlabeled pool, pseudo-label the top fraction,
    register it and switch the trainer's data loader to labeled + pseudo-labeled images.

    The round itself is :func:`~imagescore_det.engine.round.compute_round`; its folder
    ``OUTPUT_DIR/image_score/round_<k>/`` is written and read by
    :mod:`~imagescore_det.engine.round_files` (the manifest last: a round without it is
    incomplete and is recomputed).
    """

    def __init__(self, cfg, build_train_loader, evaluate=None):
        """
        Args:
            build_train_loader: callable(cfg) -> data loader (the trainer's).
            evaluate: callable() -> results dict, run before the first round when
                IMAGE_SCORE.EVAL_BEFORE (the "before pseudo-labels" mAP).
        """
        self.cfg = cfg.clone()
        self.rounds = round_iterations(cfg)
        self._build_train_loader = build_train_loader
        self._evaluate = evaluate
        self.out_dir = os.path.join(cfg.OUTPUT_DIR, "image_score")
        self.history = []  # manifests (dicts) of the rounds done or reloaded in this process
        self.eval_before = None
        self._pool = None

    def round_dir(self, round_index):
        return round_files.round_dir(self.cfg.OUTPUT_DIR, round_index)

    def _load_pool(self):
        """The unlabeled pool's dataset dicts, loaded once."""
        if self._pool is None:
            self._pool = load_datasets(self.cfg.IMAGE_SCORE.UNLABELED_DATASETS,
                                       "unlabeled pool IMAGE_SCORE.UNLABELED_DATASETS")
        return self._pool

    def _load_labeled(self):
        settings = self.cfg.IMAGE_SCORE
        return load_datasets(settings.LABELED_DATASETS or self.cfg.DATASETS.TRAIN,
                             "labeled set IMAGE_SCORE.LABELED_DATASETS (or DATASETS.TRAIN)")

    # ----------------------------------------------------------------------- hooks
    def before_train(self):
        start = self.trainer.start_iter
        if any(it >= start for it in self.rounds):
            self._load_pool()  # fail now, not after the warm-up
        done = [k for k, it in enumerate(self.rounds, 1) if it < start]
        if not done:
            return
        # Resumed after a switch: re-register the last round's dataset from disk.
        last = done[-1]
        manifest = round_files.read_manifest(self.round_dir(last))
        if manifest is None:
            raise RuntimeError(
                f"Resuming at iteration {start}, after selection round {last} (iteration "
                f"{self.rounds[last - 1]}), but {self.round_dir(last)}/{round_files.MANIFEST} "
                "is missing. The output directory does not belong to this run: resume from "
                "the right OUTPUT_DIR, or start again without --resume.")
        for round_index in done:
            earlier = round_files.read_manifest(self.round_dir(round_index))
            if earlier is not None:
                self.history.append(earlier.to_dict())
        logger.info("Resumed after selection round %d: reloading %s from disk", last,
                    manifest.dataset_name)
        self._activate(manifest, round_files.read_pseudo_dicts(self.round_dir(last), manifest))
        eval_before = os.path.join(self.out_dir, round_files.EVAL_BEFORE)
        if os.path.isfile(eval_before):
            with open(eval_before) as f:
                self.eval_before = json.load(f)

    def before_step(self):
        iteration = self.trainer.iter
        # A round's loaders, evaluation and analysis draw from the global RNGs (e.g. worker
        # seeds); restoring them makes the rest of training see the same random stream
        # whatever the selector, so runs that differ only in SELECTOR stay comparable.
        if iteration in self.rounds:
            with preserved_rng():
                self.run_round(self.rounds.index(iteration) + 1)
        elif (not self.rounds and iteration == self.cfg.IMAGE_SCORE.START_ITER
              and self.trainer.start_iter <= iteration):
            with preserved_rng():
                self._eval_before()  # SELECTOR none: the same "before" point, no pseudo-labels

    # ----------------------------------------------------------------------- a round
    def run_round(self, round_index):
        directory = self.round_dir(round_index)
        resumed = self.trainer.start_iter > 0
        manifest = round_files.read_manifest(directory) if resumed else None
        if manifest is not None and manifest.fingerprint == config_fingerprint(self.cfg):
            logger.info("Selection round %d found complete on disk; reusing it", round_index)
            pseudo = round_files.read_pseudo_dicts(directory, manifest)
        else:
            if round_index == 1:
                self._eval_before()
            result = compute_round(self.cfg, self._model(), self._load_pool(), round_index,
                                   self.trainer.iter, self._load_labeled,
                                   seed=max(self.cfg.SEED, 0) if self.cfg.IMAGE_SCORE.SEED < 0
                                   else self.cfg.IMAGE_SCORE.SEED)
            classes = MetadataCatalog.get(self.cfg.IMAGE_SCORE.UNLABELED_DATASETS[0]).thing_classes
            manifest = summarize(result, self.cfg, list(classes), config_fingerprint(self.cfg))
            if comm.is_main_process():
                round_files.write_round(directory, result, manifest)
            comm.synchronize()
            # every rank holds the same pseudo dicts: no rank reads rank 0's files
            # (OUTPUT_DIR need not be shared across machines)
            pseudo = result.pseudo
        self.history.append(manifest.to_dict())
        self._activate(manifest, pseudo)
        self._put_scalars(manifest)

    def _eval_before(self):
        if self.cfg.IMAGE_SCORE.EVAL_BEFORE and self._evaluate is not None:
            self.eval_before = self._evaluate()
            if comm.is_main_process():
                atomic_write_json(os.path.join(self.out_dir, round_files.EVAL_BEFORE),
                                  self.eval_before)

    def _model(self):
        model = self.trainer.model
        return model.module if hasattr(model, "module") else model

    def _activate(self, manifest, pseudo):
        """Register the round's pseudo dataset and train on labeled + pseudo from now on."""
        name = register_pseudo_dataset(manifest.dataset_name, pseudo,
                                       self.cfg.IMAGE_SCORE.UNLABELED_DATASETS[0])
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN = tuple(cfg.DATASETS.TRAIN) + ((name,) if pseudo else ())
        cfg.freeze()
        logger.info("Training from now on on %s (%d pseudo-labeled images)",
                    cfg.DATASETS.TRAIN, len(pseudo))
        self.trainer._trainer.reset_data_loader(lambda: self._build_train_loader(cfg))

    def _put_scalars(self, manifest):
        values = {key: getattr(manifest, key) for key in (
            "num_selected", "num_pseudo_images", "num_pseudo_boxes", "boxes_per_image",
            "selected_score_mean", "selected_score_min", "pseudo_precision", "pseudo_recall")}
        values.update({f"boxes/{name}": count
                       for name, count in manifest.per_class_boxes.items()})
        values.update({f"time/{phase}": seconds for phase, seconds in manifest.timing.items()})
        self.trainer.storage.put_scalars(
            **{f"image_score/{key}": value for key, value in values.items() if value is not None},
            smoothing_hint=False)


@contextlib.contextmanager
def preserved_rng():
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global RNG states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
