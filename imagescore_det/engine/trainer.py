"""Trainer: Detectron2's DefaultTrainer plus the Image Score hook and per-class VOC AP."""
import logging
import os
import weakref

from torch.nn.parallel import DistributedDataParallel

from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..evaluation import PerClassVOCEvaluator, ap50_of
from ..teacher.ema import scaled_keep_rate
from ..evaluation.coco import PerClassCOCOEvaluator, metric_name
from ..utils import atomic_write_json, json_plain
from .checkpoint import CheckedCheckpointer
from .config_loading import check_config
from .hook import ImageScoreHook, refresh_rounds, round_iterations, teacher_refreshes
from .lock import acquire_output_dir, release_output_dir, remove_stale_temp_files
from .nonfinite import NonFiniteLossError, non_finite_error
from .resume import ReplayHook
from .split_record import check_and_write_split, prepare_split
from . import paired

logger = logging.getLogger(__name__)


def create_ddp_model(model, **kwargs):
    """Detectron2's create_ddp_model, also right for CPU processes (gloo backend)."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


def unwrap_model(model):
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` that pseudo-labels unlabeled images when ``IMAGE_SCORE.ENABLED``.

    Adds :class:`ImageScoreHook` (first in the hook list, so a data-loader switch happens
    before the step of its iteration), evaluates VOC datasets with per-class AP, and writes
    ``OUTPUT_DIR/report.json`` (mAP before/after pseudo-labeling, every selection round).
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that DDP on CPU processes gets no device_ids.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        self._unlock = lambda: None
        if comm.is_main_process():  # one run per OUTPUT_DIR (engine/lock.py)
            acquire_output_dir(cfg.OUTPUT_DIR)
            self._unlock = weakref.finalize(self, release_output_dir, cfg.OUTPUT_DIR)
            remove_stale_temp_files(cfg.OUTPUT_DIR)
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        check_config(cfg, f"the config scaled to {comm.get_world_size()} processes "
                          "(SOLVER.REFERENCE_WORLD_SIZE)")
        self.data_split = prepare_split(cfg)  # IMAGE_SCORE.SPLIT: made and checked first
        self.check_data(cfg, ("labeled", "test"))  # before the loader reads the labeled set
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = self.build_step(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CheckedCheckpointer(model, cfg.OUTPUT_DIR,
                                                  trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.image_score_hook = None
        self.register_hooks(self.build_hooks())

    def build_step(self, cfg, model, data_loader, optimizer):
        """The object whose ``run_step`` trains one iteration (Detectron2's SimpleTrainer, or
        AMPTrainer with ``SOLVER.AMP.ENABLED``); the teacher-student trainer overrides it."""
        return (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer)

    @staticmethod
    def auto_scale_workers(cfg, num_workers: int):
        """Detectron2's ``DefaultTrainer.auto_scale_workers``, plus this project's iteration
        keys: ``IMAGE_SCORE.START_ITER`` and ``REFRESH_PERIOD`` scale like ``MAX_ITER``, so
        a selection round stays at the same fraction of the schedule on any GPU count, and
        ``IMAGE_SCORE.NUM_ROUNDS`` is set to the number of rounds of ``cfg`` as written; the
        same for ``TEACHER.BURN_IN_ITER``, ``REFRESH`` and ``NUM_REFRESHES``."""
        reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
        scaled = DefaultTrainer.auto_scale_workers(cfg, num_workers)
        if scaled is cfg:
            return cfg
        factor = num_workers / reference
        frozen = scaled.is_frozen()
        scaled.defrost()
        settings = scaled.IMAGE_SCORE
        settings.START_ITER = int(round(cfg.IMAGE_SCORE.START_ITER / factor))
        if cfg.IMAGE_SCORE.REFRESH_PERIOD > 0:
            settings.REFRESH_PERIOD = max(1, int(round(cfg.IMAGE_SCORE.REFRESH_PERIOD / factor)))
            # the rounded period alone can fit one more round before the scaled MAX_ITER
            # (3 GPUs from 8: 1333 for 1333.3, a 4th round at 27999 of 28000): keep the count
            settings.NUM_ROUNDS = len(refresh_rounds(cfg))
        logger.info("IMAGE_SCORE.START_ITER %d -> %d, REFRESH_PERIOD %d -> %d for %d workers "
                    "(SOLVER.REFERENCE_WORLD_SIZE %d)", cfg.IMAGE_SCORE.START_ITER,
                    settings.START_ITER, cfg.IMAGE_SCORE.REFRESH_PERIOD, settings.REFRESH_PERIOD,
                    num_workers, reference)
        teacher = scaled.TEACHER
        teacher.BURN_IN_ITER = int(round(cfg.TEACHER.BURN_IN_ITER / factor))
        if cfg.TEACHER.REFRESH > 0:
            teacher.REFRESH = max(1, int(round(cfg.TEACHER.REFRESH / factor)))
            # as NUM_ROUNDS above: the rounded period could fit one more ranking at the end
            teacher.NUM_REFRESHES = len(teacher_refreshes(cfg))
        # factor times the images a step: keep the EMA's time constant in images
        teacher.EMA_KEEP_RATE = scaled_keep_rate(cfg.TEACHER.EMA_KEEP_RATE, factor)
        if cfg.TEACHER.ENABLED:
            logger.info("TEACHER.BURN_IN_ITER %d -> %d, REFRESH %d -> %d, EMA_KEEP_RATE %s -> %s "
                        "for %d workers", cfg.TEACHER.BURN_IN_ITER, teacher.BURN_IN_ITER,
                        cfg.TEACHER.REFRESH, teacher.REFRESH, cfg.TEACHER.EMA_KEEP_RATE,
                        teacher.EMA_KEEP_RATE, num_workers)
        if frozen:
            scaled.freeze()
        return scaled

    def build_hooks(self):
        ret = super().build_hooks()
        if self.cfg.IMAGE_SCORE.ENABLED:
            self.image_score_hook = ImageScoreHook(
                self.cfg, self.build_train_loader,
                evaluate=lambda: self.test(self.cfg, self.model))
            ret.insert(0, self.image_score_hook)
        # after the round's hook: a resumed run replays this one from every resume point
        points = round_iterations(self.cfg)
        if self.image_score_hook is not None and not points:
            # SELECTOR none re-seeds where a round would be, as every run's paired
            # supervised-only copy does at its start (engine/paired.py): the same run
            points = [self.cfg.IMAGE_SCORE.START_ITER]
        ret.insert(1 if self.image_score_hook else 0, ReplayHook(self, self.cfg, points))
        return ret

    @staticmethod
    def check_data(cfg, roles):
        """The data check before the first iteration (``engine/data_checks.py``) of the
        datasets in ``roles``: labeled and test data when the trainer is built (any problem
        stops), the unlabeled pool when training starts with a selection round ahead (its
        unusable images are skipped in the rounds, or stop the run, per
        ``IMAGE_SCORE.ON_BAD_IMAGE``)."""
        from .data_checks import check_before_training

        return check_before_training(cfg, roles)

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:  # Detectron2's "Loss became infinite or NaN"
            if isinstance(e, NonFiniteLossError):
                raise
            hook = self.image_score_hook
            raise non_finite_error(self.iter, e, self.cfg.OUTPUT_DIR,
                                   hook.history if hook else ()) from e

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if kind == "pascal_voc":
            return PerClassVOCEvaluator(dataset_name, output_dir=output_folder)
        if kind == "coco":
            return PerClassCOCOEvaluator(dataset_name, output_dir=output_folder)
        raise NotImplementedError(f"No evaluator for dataset {dataset_name} (evaluator_type "
                                  f"{kind!r}); register it as a Pascal VOC or COCO dataset.")

    def train(self):
        hook = self.image_score_hook
        try:
            check_and_write_split(self.cfg, self.data_split, resumed=self.start_iter > 0)
            if hook is not None and any(it >= self.start_iter for it in hook.rounds):
                hook.bad_pool_files = self.check_data(self.cfg, ("unlabeled",)).pool_skips
            paired_on = paired.enabled(self.cfg)
            if paired_on:
                paired.check_resumable(self)
            results = super().train()
            self.paired_baseline = paired.run_paired_baseline(self) if paired_on else None
            if comm.is_main_process():
                self.write_report(getattr(self, "_last_eval_results", None))
            return results
        finally:
            self._unlock()  # once; a trainer that never trains releases when collected

    def report_sections(self):
        """More top-level sections of report.json (the teacher-student trainer's)."""
        return {}

    def write_report(self, final_results):
        """``OUTPUT_DIR/report.json``: what the run did and what it reached."""
        hook = self.image_score_hook
        report = {
            "config": {"selector": self.cfg.IMAGE_SCORE.SELECTOR if hook else "none",
                       "top_fraction": self.cfg.IMAGE_SCORE.TOP_FRACTION,
                       "train": list(self.cfg.DATASETS.TRAIN),
                       "unlabeled": list(self.cfg.IMAGE_SCORE.UNLABELED_DATASETS),
                       "test": list(self.cfg.DATASETS.TEST), "max_iter": self.max_iter,
                       "metric": (metric_name(self.cfg.DATASETS.TEST[0])
                                  if self.cfg.DATASETS.TEST else None),
                       "paired_baseline": paired.enabled(self.cfg),
                       "eval_pseudo_labels": bool(self.cfg.IMAGE_SCORE.EVAL_PSEUDO_LABELS)},
            "eval_before": hook.eval_before if hook else None,
            "eval_after": final_results,
            "rounds": hook.history if hook else [],
        }
        report.update(self.report_sections())
        if getattr(self, "paired_baseline", None):  # IMAGE_SCORE.PAIRED_BASELINE (paired.py)
            report["paired_baseline"] = paired.report_section(
                self.cfg, self.paired_baseline, report["eval_before"], final_results)
        atomic_write_json(os.path.join(self.cfg.OUTPUT_DIR, "report.json"), json_plain(report))
        _log_summary(report, getattr(self, "summary_title", "Image Score run summary:"),
                     self.summary_lines(report))

    def summary_lines(self, report):
        """More lines of the printed summary (the teacher-student trainer's)."""
        return []


def _log_summary(report, title="Image Score run summary:", extra=()):
    before, after = ap50_of(report["eval_before"]), ap50_of(report["eval_after"])
    metric = report["config"].get("metric") or "VOC"  # the first test set's evaluator
    lines = [title]
    if before is not None:
        lines.append(f"  {metric} AP50 before pseudo-labels: {before:.2f}")
    if after is not None:
        lines.append(f"  {metric} AP50 at the end:           {after:.2f}"
                     + ("  with pseudo-labels" if report.get("paired_baseline") else ""))
    if report.get("paired_baseline"):
        lines.extend(paired.summary_lines(report["paired_baseline"]))
    elif report["rounds"] and after is not None:
        lines.append("  (no supervised-only baseline to compare with: IMAGE_SCORE.PAIRED_BASELINE "
                     "True continues one from the round)")
    for entry in report["rounds"]:
        precision = entry.get("pseudo_precision")
        lines.append(f"  round {entry['round']} @ iter {entry['iteration']}: {entry['selector']} "
                     f"selected {entry['num_selected']}/{entry['pool_size']}, "
                     f"{entry['num_pseudo_boxes']} pseudo boxes"
                     + (f", precision {precision:.3f}" if precision is not None else "")
                     + (f", {entry['num_skipped']} unusable pool images skipped (skipped.csv)"
                        if entry.get("num_skipped") else ""))
    if (report["rounds"] and report["config"].get("eval_pseudo_labels")
            and all(e.get("pseudo_precision") is None for e in report["rounds"])):
        lines.append("  (no pseudo-label precision/recall: the unlabeled pool has no truth to "
                     "measure them against, e.g. a folder of images)")
    lines.extend(extra)
    logger.info("\n".join(lines))


__all__ = ["Trainer", "create_ddp_model", "unwrap_model"]
