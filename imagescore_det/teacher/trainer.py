"""``TeacherTrainer``: the project's ``Trainer`` with an online teacher-student step.

Until ``TEACHER.BURN_IN_ITER`` it trains like the supervised ``Trainer``. At that iteration
the teacher becomes a copy of the student; from then on every step (``TeacherStudentStep``)
takes a labeled batch (supervised loss) and an unlabeled batch: the teacher (eval mode, no
gradient) predicts on each image's weak view, its boxes with score >= ``TEACHER.SCORE_THRESH``
become the student's targets on the strong view of the same image, the unsupervised loss is
``UNSUP_LOSS_WEIGHT`` x the switched-on losses, and after the optimizer's step the teacher
follows the student by the EMA. Every ``TEACHER.REFRESH`` iterations (0: once, at the end of
the burn-in) the teacher ranks the pool with ``TEACHER.SELECTOR`` and the unlabeled batches
come from its top ``TEACHER.TOP_FRACTION``, or with ``TEACHER.RANK_WEIGHTING`` from the whole
pool, each image drawn in proportion to a weight from its rank (``ranking.rank_repeat_factors``,
Detectron2's ``RepeatFactorTrainingSampler``).

Checkpoints (``DetectionCheckpointer`` checkpointables) hold the student (``model``), the
teacher (``teacher``) and ``teacher_state`` (EMA steps, the current selection); the final
teacher is also written as the plain Detectron2 checkpoint ``model_final_teacher.pth``.
Many processes (``--num-gpus``): only the student is wrapped in DistributedDataParallel;
the teacher is made from and follows the unwrapped student, so it is the same on every rank;
the unlabeled batches are sharded (Detectron2's ``TrainingSampler``, or
``RepeatFactorTrainingSampler`` under rank weighting: each rank its own part of one seeded
stream of the selection).
"""
import logging
import os
import time
import weakref

import numpy as np
import torch

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.engine import HookBase, SimpleTrainer, hooks
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import get_event_storage

from ..engine.checkpoint import CheckedCheckpointer, CheckpointMismatchError
from ..engine.config_loading import ConfigError
from ..engine.consistency import load_datasets, run_seed
from ..engine.hook import preserved_rng, teacher_refreshes
from ..engine.paired import save_round_checkpoint
from ..engine.ranking import rank_order, rank_repeat_factors, select_top
from ..engine.resume import ReplayHook, derived_seed
from ..engine.round import has_truth
from ..engine.safe_load import FORMAT_KEY, FORMAT_VERSION, LAST_CHECKPOINT, atomic_torch_save
from ..engine.selectors import NO_SELECTION, SelectorContext, rank_pool
from ..engine.trainer import Trainer, unwrap_model
from ..evaluation import ap50_of
from .ema import copy_into, ema_update, make_teacher
from .focal import use_focal_loss
from .targets import (pseudo_box_counts, pseudo_box_scalars, pseudo_targets, unsup_loss_names,
                      unsupervised_loss)
from .views import strong_view, view_seed

logger = logging.getLogger(__name__)

TEACHER_EXPORT = "model_final_teacher.pth"


def unlabeled_sampler(selection, seed):
    """The unlabeled loader's sampler over ``selection["indices"]`` (``seed``: the same on
    every rank, each rank draws its part of the one stream): uniform (``TrainingSampler``),
    or under rank weighting (the selection holds the ranking, ``"order"``: the whole pool,
    best first) Detectron2's ``RepeatFactorTrainingSampler`` with the rank's repeat factors,
    whose stochastic rounding draws from the same seeded generator as its shuffle."""
    order = selection.get("order")
    if order is None:
        return TrainingSampler(len(selection["indices"]), seed=seed)
    return RepeatFactorTrainingSampler(torch.tensor(rank_repeat_factors(order)), seed=seed)


class TeacherState:
    """What a checkpoint needs besides the two models: whether the teacher exists yet, the
    EMA steps taken, and the current selection (pool indices the unlabeled batches come
    from, and when and how it was made)."""

    def __init__(self):
        self.active = False
        self.ema_steps = 0
        # {"iteration", "selector", "indices", "order", "pool_size"}; "order" (the ranking,
        # best first) only under TEACHER.RANK_WEIGHTING, else None
        self.selection = None
        self.history = []  # one entry per ranking of the pool
        self.run_seed = None  # the selectors' seed (consistency.run_seed), kept for SEED -1
        self.pseudo_totals = [0, 0, 0]  # the teacher's boxes against the pool's truth: tp, fp, gt
        self.loaded = False

    def state_dict(self):
        return {"mode": "teacher", "active": self.active, "ema_steps": self.ema_steps,
                "selection": self.selection, "history": self.history, "run_seed": self.run_seed,
                "pseudo_totals": list(self.pseudo_totals)}

    def load_state_dict(self, state):
        if state.get("mode") != "teacher":
            raise CheckpointMismatchError(f"teacher_state of mode {state.get('mode')!r} in the "
                                          "checkpoint; it was not written by TEACHER.ENABLED.")
        self.active = bool(state["active"])
        self.ema_steps = int(state["ema_steps"])
        self.selection = state["selection"]
        self.history = list(state["history"])
        self.run_seed = state.get("run_seed")
        self.pseudo_totals = list(state.get("pseudo_totals", [0, 0, 0]))
        self.loaded = True


class TeacherStudentStep(SimpleTrainer):
    """Detectron2's ``SimpleTrainer`` whose ``run_step`` adds, after the burn-in, the
    unsupervised loss from the teacher's boxes and the EMA update (see the module doc)."""

    def __init__(self, model, data_loader, optimizer, owner):
        super().__init__(model, data_loader, optimizer)
        self._owner = owner  # a weakref.proxy of the TeacherTrainer

    def run_step(self):
        owner = self._owner
        if not owner.state.active:
            return super().run_step()
        settings = owner.cfg.TEACHER
        assert self.model.training, "[TeacherStudentStep] the student was set to eval mode!"
        start = time.perf_counter()
        labeled = owner.labeled_inputs(next(self._data_loader_iter), self.iter)
        data_time = time.perf_counter() - start
        loss_dict = self.model(labeled)
        if not settings.SUPERVISED_ONLY:
            # the unlabeled half draws from generators of its own (seeded by the data seed
            # and the iteration), so the labeled half's random stream is the paired
            # supervised-only copy's, and a resumed step draws what the original one did
            with preserved_rng():
                seed_all_rng(derived_seed(f"unlabeled/{owner.data_seed}", self.iter)
                             + comm.get_rank())
                unsup, parts, targets, counts = self._unsupervised(owner, settings)
            loss_dict = dict(loss_dict, loss_unsup=unsup)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if not settings.SUPERVISED_ONLY:
            get_event_storage().put_scalars(
                **{f"teacher/{k}": float(v) for k, v in parts.items()},
                **{"teacher/pseudo_boxes_per_image": float(np.mean([len(t) for t in targets]))})
            if counts is not None:  # this process's share of the batch, each step as it is
                get_event_storage().put_scalars(
                    **pseudo_box_scalars(counts, owner.state.pseudo_totals), smoothing_hint=False)
        self.optimizer.step()
        ema_update(owner.teacher, unwrap_model(self.model), settings.EMA_KEEP_RATE)
        owner.state.ema_steps += 1

    def _unsupervised(self, owner, settings):
        """The teacher on the weak views of the next unlabeled batch, the student on their
        strong views against its boxes: ``(weighted loss, unweighted parts, targets, counts)``;
        ``counts``: per image ``(tp, fp, n_true)`` of the teacher's boxes against the pool's
        truth where it is measured (``owner.measures_pseudo_boxes``), else None."""
        weak = owner.next_unlabeled()
        # the pool's truth (weak-view coordinates) where it has one; neither the teacher nor
        # the student sees it (but TARGETS truth, the upper bound, trains on it)
        truths = [d.get("instances") for d in weak]
        weak = [{k: v for k, v in d.items() if k != "instances"} for d in weak]
        counts = None
        if settings.TARGETS == "truth":
            targets = truths
        else:
            with torch.no_grad():
                predictions = owner.teacher.inference(weak, do_postprocess=False)
            targets = pseudo_targets(predictions, settings.SCORE_THRESH)
            if owner.measures_pseudo_boxes:
                counts = pseudo_box_counts(predictions, truths, settings.SCORE_THRESH,
                                           owner.cfg.IMAGE_SCORE.PSEUDO_IOU_THRESH)
        strong = owner.strong_views(weak, self.iter)
        unsup, parts = unsupervised_loss(self.model, strong, targets,
                                         unsup_loss_names(settings.UNSUP_REGRESSION),
                                         settings.UNSUP_LOSS_WEIGHT)
        return unsup, parts, targets, counts


class TeacherHook(HookBase):
    """Before a step: the copy at the end of the burn-in, the pool's ranking at each refresh,
    and the unlabeled loader rebuilt wherever the replay hook rebuilds the labeled one."""

    def __init__(self, owner, replay):
        self._owner = owner
        self._replay = replay

    def before_step(self):
        owner, it = self._owner, self.trainer.iter
        burn_in = owner.cfg.TEACHER.BURN_IN_ITER
        if it < burn_in:
            return
        if it == burn_in and owner.cfg.TEACHER.PAIRED_BASELINE and not owner.state.active:
            save_round_checkpoint(self.trainer)  # the paired copy's start (engine/paired.py)
        if it == burn_in and not owner.state.active:
            copy_into(owner.teacher, unwrap_model(owner.model))
            owner.state.active = True
            logger.info("Iteration %d: end of the burn-in, the teacher is a copy of the student",
                        it)
        if owner.cfg.TEACHER.SUPERVISED_ONLY:
            return  # no unlabeled images
        if it in owner.refresh_iterations() or owner.state.selection is None:
            with preserved_rng():  # the ranking's draws leave the training stream as it was
                owner.refresh_selection(it)
            owner.rebuild_unlabeled(it)
        elif it == self.trainer.start_iter or self._replay.is_resume_point(it):
            owner.rebuild_unlabeled(it)

    def after_train(self):
        self._owner._unlabeled_iter = None  # its workers end before a paired copy starts


class TeacherTrainer(Trainer):
    """See the module doc. ``cfg.TEACHER.ENABLED`` must be on."""

    def __init__(self, cfg):
        world = comm.get_world_size()
        scaled = self.auto_scale_workers(cfg, world)
        batch = self.unlabeled_batch_size(scaled)
        if batch % world:
            raise ConfigError(
                f"TEACHER.UNLABELED_PER_LABELED={cfg.TEACHER.UNLABELED_PER_LABELED} gives an "
                f"unlabeled batch of {batch} images (round(SOLVER.IMS_PER_BATCH="
                f"{scaled.SOLVER.IMS_PER_BATCH} x ratio)), which {world} processes cannot "
                "share equally; choose a ratio that makes it a multiple of the number of "
                "processes.")
        self.state = TeacherState()
        super().__init__(cfg)
        self.checkpointer.add_checkpointable("teacher", self.teacher)
        self.checkpointer.add_checkpointable("teacher_state", self.state)
        self.summary_title = "Teacher-student run summary (the teacher is evaluated):"
        self.pool = [] if self.cfg.TEACHER.SUPERVISED_ONLY else self._load_pool(self.cfg)
        # the teacher's boxes are compared with the pool's truth at every step when every
        # pool image has some (a synthetic pool; not a folder of images)
        self.measures_pseudo_boxes = (self.cfg.TEACHER.TARGETS != "truth" and bool(self.pool)
                                      and has_truth(self.pool))
        self._unlabeled_iter = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.TEACHER.FOCAL_GAMMA > 0:
            try:
                use_focal_loss(model, cfg.TEACHER.FOCAL_GAMMA)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return model

    def build_step(self, cfg, model, data_loader, optimizer):
        if cfg.SOLVER.AMP.ENABLED:
            raise ConfigError("TEACHER.ENABLED with SOLVER.AMP.ENABLED: mixed precision is not "
                              "done for the teacher-student step; set SOLVER.AMP.ENABLED False.")
        self.teacher = make_teacher(unwrap_model(model))  # never wrapped in DDP
        return TeacherStudentStep(model, data_loader, optimizer, weakref.proxy(self))

    def _load_pool(self, cfg):
        names = cfg.IMAGE_SCORE.UNLABELED_DATASETS
        try:
            pool = load_datasets(names, "unlabeled pool IMAGE_SCORE.UNLABELED_DATASETS")
        except ValueError:
            raise ConfigError(f"The unlabeled pool IMAGE_SCORE.UNLABELED_DATASETS={tuple(names)} "
                              "has no images; the teacher-student mode needs some. Check the "
                              "datasets' split files, or name other datasets.") from None
        bad = self.check_data(cfg, ("unlabeled",)).pool_skips
        truth = cfg.TEACHER.TARGETS == "truth"
        if truth:
            lacking = [d["file_name"] for d in pool if "annotations" not in d]
            if lacking:
                raise ConfigError(
                    f"TEACHER.TARGETS truth trains on the pool's own annotations, but "
                    f"{len(lacking)} image(s) of IMAGE_SCORE.UNLABELED_DATASETS={tuple(names)} "
                    f"have none (e.g. {lacking[0]}). Name a pool with truth, or use "
                    "TEACHER.TARGETS teacher.")
        # the annotations stay where every image has some: the loader maps them into the weak
        # view, where TARGETS truth (the upper bound) trains on them and otherwise only the
        # pseudo-box precision is measured with them (TeacherStudentStep._unsupervised strips
        # them before the teacher and the student); a pool with only some is stripped
        keep = truth or has_truth(pool)
        pool = [d if keep else {k: v for k, v in d.items() if k != "annotations"} for d in pool
                if os.path.normpath(d["file_name"]) not in bad]
        if not pool:
            raise ConfigError(f"Every image of the unlabeled pool {tuple(names)} is unusable "
                              "(see the data check above); fix or replace them.")
        return pool

    def build_hooks(self):
        ret = super().build_hooks()
        replay = next(h for h in ret if isinstance(h, ReplayHook))
        # the burn-in's end and every refresh re-seed like the offline rounds do, so a run
        # from a burn-in checkpoint shares the random stream from there on
        replay.rounds.update(self.refresh_iterations())
        self.data_seed_hook = replay
        ret.insert(ret.index(replay) + 1, TeacherHook(weakref.proxy(self), replay))
        for i, h in enumerate(ret):  # evaluate the teacher once there is one
            if isinstance(h, hooks.EvalHook):
                ret[i] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._test_and_save)
        return ret

    def _test_and_save(self):
        """The evaluation hook's function: the teacher (the reported model, its files in
        ``inference/``) and, once there is a teacher, the student beside it (in
        ``inference/student/``, so that the teacher's detections files stay the ones
        ``tools/compare_runs.py`` reads)."""
        self._last_eval_results = self.test(self.cfg, self.evaluated_model())
        if self.state.active:
            folder = os.path.join(self.cfg.OUTPUT_DIR, "inference", "student")
            evaluators = [self.build_evaluator(self.cfg, name, folder)
                          for name in self.cfg.DATASETS.TEST]
            self.student_results = self.test(self.cfg, self.model, evaluators)
        return self._last_eval_results

    def evaluated_model(self):
        """The teacher once the burn-in is over, the student before."""
        return self.teacher if self.state.active else self.model

    @property
    def data_seed(self):
        return self.data_seed_hook.seed

    # ------------------------------------------------------------------ the pool filter
    def refresh_iterations(self):
        return teacher_refreshes(self.cfg)

    def refresh_selection(self, iteration):
        """Rank the pool with the teacher (``TEACHER.SELECTOR``) and keep the top fraction, or
        under ``TEACHER.RANK_WEIGHTING`` the whole pool with its ranking (the weights)."""
        settings = self.cfg.TEACHER
        t0 = time.perf_counter()
        order = None
        if settings.SELECTOR == NO_SELECTION:
            indices = list(range(len(self.pool)))
        else:
            # SEED, or under SEED -1 the seed drawn at the first ranking (checkpointed, so a
            # resumed run ranks with the same one)
            self.state.run_seed = run_seed(self.cfg, self.state.run_seed)
            ctx = SelectorContext(
                cfg=self.cfg, model=self.teacher, pool=self.pool,
                labeled=lambda: load_datasets(self.cfg.IMAGE_SCORE.LABELED_DATASETS
                                              or self.cfg.DATASETS.TRAIN, "labeled set"),
                round_index=len(self.state.history) + 1, seed=self.state.run_seed)
            ranking = rank_pool(settings.SELECTOR, ctx)
            if settings.RANK_WEIGHTING:  # every image, drawn by its rank's weight
                order = [int(i) for i in rank_order(ranking.scores)]
                indices = list(range(len(self.pool)))
            else:
                indices = sorted(int(i) for i in select_top(ranking.scores,
                                                            settings.TOP_FRACTION))
        seconds = time.perf_counter() - t0
        self.state.selection = {"iteration": iteration, "selector": settings.SELECTOR,
                                "indices": indices, "order": order, "pool_size": len(self.pool)}
        self.state.history.append({"iteration": iteration, "selector": settings.SELECTOR,
                                   "num_selected": len(indices), "pool_size": len(self.pool),
                                   "rank_weighting": order is not None, "seconds": seconds})
        logger.info("Iteration %d: the teacher's filter %s keeps %d of %d pool images%s (%.1f s)",
                    iteration, settings.SELECTOR, len(indices), len(self.pool),
                    ", weighted by rank" if order is not None else "", seconds)

    def unlabeled_batch_size(self, cfg=None):
        """All processes' unlabeled images a step (``build_detection_train_loader`` gives
        each process its share)."""
        cfg = cfg or self.cfg
        ratio = cfg.TEACHER.UNLABELED_PER_LABELED
        return max(1, int(round(cfg.SOLVER.IMS_PER_BATCH * ratio)))

    def rebuild_unlabeled(self, iteration):
        """The unlabeled loader over the current selection, its order (and under rank
        weighting its repeats) seeded by the run's data seed and ``iteration`` (as the replay
        hook seeds the labeled one); the same stream on every rank, of which the sampler
        (:func:`unlabeled_sampler`) gives each rank its part."""
        selection = self.state.selection
        if len(selection["indices"]) and selection["pool_size"] != len(self.pool):
            raise CheckpointMismatchError(
                f"The checkpoint's teacher selection was made on a pool of "
                f"{selection['pool_size']} images; IMAGE_SCORE.UNLABELED_DATASETS has "
                f"{len(self.pool)} now. Resume with the pool of the run that wrote it, or "
                "train in a new OUTPUT_DIR.")
        dicts = [self.pool[i] for i in selection["indices"]]
        loader = build_detection_train_loader(
            dicts, mapper=DatasetMapper(self.cfg, is_train=True),
            sampler=unlabeled_sampler(selection, derived_seed(self.data_seed, iteration)),
            total_batch_size=self.unlabeled_batch_size(),
            aspect_ratio_grouping=self.cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=self.cfg.DATALOADER.NUM_WORKERS)
        self._unlabeled_iter = iter(loader)

    def next_unlabeled(self):
        return next(self._unlabeled_iter)

    def strong_views(self, batch, iteration):
        """The strong views of this process's part of a batch (seeded by the data seed, the
        iteration and each image's place in the batch of all processes)."""
        first = comm.get_rank() * len(batch)
        return [dict(d, image=strong_view(d["image"], view_seed(self.data_seed, iteration,
                                                                first + i), self.cfg.INPUT.FORMAT))
                for i, d in enumerate(batch)]

    def labeled_inputs(self, batch, iteration):
        """The labeled batch a step trains on after the burn-in: as loaded, or with
        ``TEACHER.SUPERVISED_ONLY`` (the paired baseline's copy) its strong views, drawn
        like the unlabeled images' of the main run at the same iteration."""
        return self.strong_views(batch, iteration) if self.cfg.TEACHER.SUPERVISED_ONLY \
            else batch

    # ------------------------------------------------------------------ checkpoints, report
    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        selection = self.state.selection
        weighted = bool(self.cfg.TEACHER.RANK_WEIGHTING)
        if selection is not None and (selection.get("order") is not None) != weighted:
            raise CheckpointMismatchError(
                f"The checkpoint's teacher selection was made with TEACHER.RANK_WEIGHTING "
                f"{not weighted}, the config has {weighted}: the resumed run would draw other "
                "unlabeled images than the run that wrote it. Resume with TEACHER.RANK_WEIGHTING "
                f"{not weighted}, or train in a new OUTPUT_DIR.")
        if resume and self.start_iter > self.cfg.TEACHER.BURN_IN_ITER and not self.state.loaded:
            path = os.path.join(self.cfg.OUTPUT_DIR, LAST_CHECKPOINT)
            raise CheckpointMismatchError(
                f"--resume at iteration {self.start_iter}, after TEACHER.BURN_IN_ITER="
                f"{self.cfg.TEACHER.BURN_IN_ITER}, from a checkpoint (named by {path}) without "
                "a teacher: it was not written by the teacher-student mode. Start the mode from "
                "it with MODEL.WEIGHTS <that checkpoint> (without --resume) in a new OUTPUT_DIR.")

    def train(self):
        results = super().train()
        if comm.is_main_process() and self.state.active:
            path = os.path.join(self.cfg.OUTPUT_DIR, TEACHER_EXPORT)
            atomic_torch_save({"model": self.teacher.state_dict(), "iteration": self.iter,
                               FORMAT_KEY: FORMAT_VERSION}, path)
            logger.info("The final teacher, as a plain Detectron2 checkpoint: %s", path)
        return results

    def report_sections(self):
        settings = self.cfg.TEACHER
        return {"teacher": {
            "evaluated": "teacher" if self.state.active else "student",
            "burn_in_iter": settings.BURN_IN_ITER, "ema_keep_rate": settings.EMA_KEEP_RATE,
            "ema_steps": self.state.ema_steps, "score_thresh": settings.SCORE_THRESH,
            "unsup_loss_weight": settings.UNSUP_LOSS_WEIGHT,
            "unsup_regression": bool(settings.UNSUP_REGRESSION),
            "selector": settings.SELECTOR, "top_fraction": settings.TOP_FRACTION,
            "rank_weighting": bool(settings.RANK_WEIGHTING),
            "refreshes": self.state.history,
            "export": TEACHER_EXPORT if self.state.active else None,
            "student_eval_after": getattr(self, "student_results", None)}}

    def summary_lines(self, report):
        student = ap50_of(report["teacher"]["student_eval_after"])
        if student is None:
            return []
        return [f"  VOC AP50 at the end, student:  {student:.2f}  (the line above: the teacher; "
                "its EMA of this student is the reported model)"]


class TeacherWeightsCheckpointer(CheckedCheckpointer):
    """Loads a teacher-student checkpoint's *teacher* into the model (``--eval-only``); a
    checkpoint without one (a plain Detectron2 checkpoint) loads as it is."""

    def _load_file(self, filename):
        checkpoint = super()._load_file(filename)
        if isinstance(checkpoint, dict) and "teacher" in checkpoint:
            logger.info("%s holds a teacher: evaluating the teacher", filename)
            checkpoint["model"] = checkpoint.pop("teacher")
        return checkpoint
