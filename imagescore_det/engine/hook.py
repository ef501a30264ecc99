"""ImageScoreHook: when selection rounds happen, resume, and switching the trainer's data."""
import contextlib
import logging
import os
import random

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data.pseudo import register_pseudo_dataset
from ..utils import atomic_write_json, read_json_object
from . import round_files
from .paired import save_round_checkpoint
from .consistency import (check_equal_sizes, check_round_belongs_to_run, config_fingerprint,
                          fingerprint_items, from_rank0, load_datasets, needs_equal_sizes,
                          run_seed)
from .round import compute_round, summarize
from .config_loading import ConfigError
from .selectors import NO_SELECTION, images_without_truth, needs_pool_truth

logger = logging.getLogger(__name__)


def round_iterations(cfg):
    """Iterations at which a selection round runs: START_ITER, then every REFRESH_PERIOD
    (at most NUM_ROUNDS of them when it is > 0)."""
    settings = cfg.IMAGE_SCORE
    if not settings.ENABLED or settings.SELECTOR == NO_SELECTION:
        return []
    if settings.REFRESH_PERIOD <= 0:
        return [settings.START_ITER]
    return refresh_rounds(cfg)


def refresh_schedule(start, max_iter, period, count):
    """``range(start, max_iter, period)``, its first ``count`` when that is > 0 (the count
    of the config as written, set by ``Trainer.auto_scale_workers``: the rounded scaled
    period alone can fit one more before the scaled ``MAX_ITER``)."""
    return list(range(start, max_iter, period)[:count or None])


def refresh_rounds(cfg):
    """With ``REFRESH_PERIOD`` > 0: ``range(START_ITER, MAX_ITER, REFRESH_PERIOD)``, its
    first ``NUM_ROUNDS`` when that is > 0."""
    settings = cfg.IMAGE_SCORE
    return refresh_schedule(settings.START_ITER, cfg.SOLVER.MAX_ITER, settings.REFRESH_PERIOD,
                            settings.NUM_ROUNDS)


def teacher_refreshes(cfg):
    """The iterations at which the online teacher ranks the pool: ``TEACHER.BURN_IN_ITER``
    alone with ``REFRESH`` 0, else ``range(BURN_IN_ITER, MAX_ITER, REFRESH)``, its first
    ``TEACHER.NUM_REFRESHES`` when that is > 0."""
    settings = cfg.TEACHER
    if settings.REFRESH <= 0:
        return [settings.BURN_IN_ITER]
    return refresh_schedule(settings.BURN_IN_ITER, cfg.SOLVER.MAX_ITER, settings.REFRESH,
                            settings.NUM_REFRESHES)


def check_pool_truth(cfg, pool):
    """A selector that labels with the pool's ground truth (the oracle) needs a pool that has
    it: refused at trainer start, naming the datasets and the fix."""
    settings = cfg.IMAGE_SCORE
    missing = images_without_truth(pool) if needs_pool_truth(settings.SELECTOR) else []
    if missing:
        raise ConfigError(
            f"IMAGE_SCORE.SELECTOR is '{settings.SELECTOR}', which labels the chosen images "
            "with the pool's ground truth, but the pool IMAGE_SCORE.UNLABELED_DATASETS "
            f"{tuple(settings.UNLABELED_DATASETS)} has no ground truth for {len(missing)} of "
            f"its {len(pool)} images (no 'annotations' in their dataset dicts), e.g. "
            f"{missing[0]}. Name a pool registered with its annotations (e.g. the _unlabeled "
            "part of IMAGE_SCORE.SPLIT, or synthetic_voc_unlabeled), or use "
            "IMAGE_SCORE.SELECTOR random (the same choice, labeled by the detector).")


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
        self.seed = None  # the run's seed (consistency.run_seed), set in before_train
        self._recorded_seed = None  # the seed drawn under SEED -1, from the checkpoint
        self._pool = None
        # {normalized image path: reason} of pool images the data check at trainer start
        # found unusable (IMAGE_SCORE.ON_BAD_IMAGE skip); set by Trainer.train
        self.bad_pool_files = {}

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
    def state_dict(self):
        """Under ``SEED -1`` the seed this run drew, saved in every checkpoint so that a
        resumed run fits the same subsample and selects the same images."""
        return {"run_seed": self.seed} if self.cfg.SEED < 0 and self.seed is not None else {}

    def load_state_dict(self, state):
        self._recorded_seed = state.get("run_seed")

    def before_train(self):
        start = self.trainer.start_iter
        settings = self.cfg.IMAGE_SCORE
        self.seed = run_seed(self.cfg, self._recorded_seed)
        if any(it >= start for it in self.rounds):
            pool = self._load_pool()  # fail now, not after the warm-up
            check_pool_truth(self.cfg, pool)
            if needs_equal_sizes(self.cfg):
                check_equal_sizes(self.cfg, self._load_labeled() + pool,
                                  "labeled set and unlabeled pool")
        if start >= settings.START_ITER:  # evaluated with the weights this run resumes from
            self.eval_before = from_rank0(self._read_eval_before)
        done = [k for k, it in enumerate(self.rounds, 1) if it < start]
        if not done:
            return
        # Resumed after a switch: re-register the last round's dataset from disk.
        manifests, pseudo = from_rank0(lambda: self._read_done_rounds(done, start))
        self.history.extend(manifest.to_dict() for manifest in manifests if manifest is not None)
        logger.info("Resumed after selection round %d: reloading %s from disk", done[-1],
                    manifests[-1].dataset_name)
        self._activate(manifests[-1], pseudo)

    def _read_eval_before(self):
        path = os.path.join(self.out_dir, round_files.EVAL_BEFORE)
        if not os.path.isfile(path):
            return None
        return read_json_object(path, "the evaluation before round 1",
                                f"Delete {path} (report.json then has no 'before' AP) or "
                                "restore it.", round_files.RoundError)

    def _read_done_rounds(self, done, start):
        """(manifests of the rounds before ``start``, the last one's pseudo dicts), checked."""
        last = done[-1]
        manifests = [round_files.read_manifest(self.round_dir(k)) for k in done]
        if manifests[-1] is None:
            raise RuntimeError(
                f"Resuming at iteration {start}, after selection round {last} (iteration "
                f"{self.rounds[last - 1]}), but {self.round_dir(last)}/{round_files.MANIFEST} "
                "is missing. The output directory does not belong to this run: resume from "
                "the right OUTPUT_DIR, or start again without --resume.")
        check_round_belongs_to_run(manifests[-1], self.cfg, self.round_dir(last))
        return manifests, round_files.read_pseudo_dicts(self.round_dir(last), manifests[-1])

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
        if (self.cfg.IMAGE_SCORE.PAIRED_BASELINE and iteration == self.cfg.IMAGE_SCORE.START_ITER
                and self.trainer.start_iter <= iteration):
            save_round_checkpoint(self.trainer)  # RNGs restored: their state at the round

    # ----------------------------------------------------------------------- a round
    def run_round(self, round_index):
        directory = self.round_dir(round_index)
        saved = None
        if self.trainer.start_iter > 0:  # resumed exactly at this round: is it on disk?
            saved = from_rank0(lambda: self._read_saved_round(directory))
        if saved is not None:
            manifest, pseudo = saved
            logger.info("Selection round %d found complete on disk; reusing it", round_index)
        else:
            if round_index == 1 and self.eval_before is None:
                self._eval_before()
            pool = self._load_pool()
            known_bad = {i: self.bad_pool_files[path] for i, path in
                         enumerate(os.path.normpath(d["file_name"]) for d in pool)
                         if path in self.bad_pool_files}
            result = compute_round(self.cfg, self._model(), pool, round_index,
                                   self.trainer.iter, self._load_labeled, seed=self.seed,
                                   skipped=known_bad)
            classes = MetadataCatalog.get(self.cfg.IMAGE_SCORE.UNLABELED_DATASETS[0]).thing_classes
            manifest = summarize(result, self.cfg, list(classes), config_fingerprint(self.cfg),
                                 fingerprint_items(self.cfg))
            if comm.is_main_process():
                round_files.write_round(directory, result, manifest)
            comm.synchronize()
            # every rank holds the same pseudo dicts: no rank reads rank 0's files
            pseudo = result.pseudo
        self.history.append(manifest.to_dict())
        self._activate(manifest, pseudo)
        self._put_scalars(manifest)

    def _read_saved_round(self, directory):
        manifest = round_files.read_manifest(directory)
        if manifest is None:
            return None
        check_round_belongs_to_run(manifest, self.cfg, directory)
        return manifest, round_files.read_pseudo_dicts(directory, manifest)

    def _eval_before(self):
        if self.cfg.IMAGE_SCORE.EVAL_BEFORE and self._evaluate is not None:
            self.eval_before = self._evaluate()
            if comm.is_main_process():
                atomic_write_json(os.path.join(self.out_dir, round_files.EVAL_BEFORE),
                                  self.eval_before)

    def _model(self):
        from .trainer import unwrap_model

        return unwrap_model(self.trainer.model)

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
            "num_skipped",
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
