"""The paired supervised-only baseline (``IMAGE_SCORE.PAIRED_BASELINE``).

Does training on pseudo-labels beat simply training longer on the labeled set? Both
continuations must start from the same model, optimizer and LR schedule at the round, run
the same iterations, and see the same random stream; then their difference on the test set
is the pseudo-labels' effect, with a paired bootstrap interval over the test images.

* At ``IMAGE_SCORE.START_ITER`` (before the step, after the round or the "before"
  evaluation, when the global RNGs are back to their state at the round) the hook calls
  :func:`save_round_checkpoint`: ``OUTPUT_DIR/model_round1.pth`` holds the model, optimizer,
  LR scheduler, the hooks' state (the replay seed) and iteration, exactly what the periodic
  checkpointer writes after iteration ``START_ITER - 1``, plus every rank's RNG states.
* After training, :func:`run_paired_baseline` builds a second trainer in the same process
  with ``IMAGE_SCORE.SELECTOR none`` and ``OUTPUT_DIR/paired_supervised/``, loads that
  checkpoint, restores the RNG states and trains to ``MAX_ITER``.
* The random stream: the replay hook (``engine/resume.py``) re-seeds every generator from
  (data seed, ``START_ITER``) and rebuilds the training loader at the round in every run
  (``SELECTOR none`` too: the trainer makes ``START_ITER`` one of its points) and at the
  copy's first iteration. So the copy and the main run draw the same numbers after the
  round, and the copy of any run is the ``none`` run of the same config: it ends with the
  same weights and AP (tested, bit for bit).
* ``paired_supervised/paired_result.json`` (written last) marks the copy finished: a
  ``--resume`` does not repeat it. A copy killed part-way resumes from its own checkpoints.
* :func:`report_section` compares the two runs' saved detections
  (:mod:`imagescore_det.evaluation.bootstrap`): pseudo-labels minus supervised-only.

Cost: the continuation after ``START_ITER`` runs twice.

The teacher-student mode (``TEACHER.PAIRED_BASELINE``) uses the same machinery with the
burn-in's end (``TEACHER.BURN_IN_ITER``) as its start (:func:`start_iteration`); its copy
runs with ``TEACHER.SUPERVISED_ONLY`` (the labeled images' strong views, no unlabeled ones).
"""
import hashlib
import json
import logging
import os
import random

import numpy as np
import torch

from detectron2.utils import comm

from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, compare_files
from ..evaluation.detections import detections_path
from ..utils import atomic_write, atomic_write_json, atomic_write_text, json_plain
from .consistency import from_rank0

logger = logging.getLogger(__name__)

ROUND_CHECKPOINT = "model_round1"
PAIRED_DIR = "paired_supervised"
RESULT_FILE = "paired_result.json"
RESULT_VERSION = 1


def enabled(cfg):
    """Whether the run continues a paired supervised-only copy after training."""
    if cfg.TEACHER.ENABLED:
        return bool(cfg.TEACHER.PAIRED_BASELINE)
    return bool(cfg.IMAGE_SCORE.ENABLED and cfg.IMAGE_SCORE.PAIRED_BASELINE)


def start_iteration(cfg):
    """Where the copy branches off: the round, or the teacher's burn-in end."""
    return cfg.TEACHER.BURN_IN_ITER if cfg.TEACHER.ENABLED else cfg.IMAGE_SCORE.START_ITER


def _switch_name(cfg):
    return "TEACHER.PAIRED_BASELINE" if cfg.TEACHER.ENABLED else "IMAGE_SCORE.PAIRED_BASELINE"


# --------------------------------------------------------------------------- RNG states
def rng_state():
    """Python's, NumPy's and torch's (CPU, CUDA) global RNG states, as plain lists and
    tensors (what ``torch.load(weights_only=True)`` reads back)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- at the round
def round_checkpoint_path(cfg):
    return os.path.join(cfg.OUTPUT_DIR, ROUND_CHECKPOINT + ".pth")


def save_round_checkpoint(trainer):
    """Save the full training state at the start of iteration ``trainer.iter`` (every rank
    must call it: the RNG states of all ranks are gathered)."""
    states = comm.all_gather(rng_state())
    iteration = trainer.iter
    # The state before step `iteration` is the periodic checkpointer's state after step
    # `iteration - 1`: saved that way, a resume (main or paired) starts at `iteration`.
    trainer.iter = iteration - 1
    try:
        trainer.checkpointer.save(ROUND_CHECKPOINT, iteration=iteration - 1,
                                  round_iteration=iteration, rng_states=states)
    finally:
        trainer.iter = iteration
    comm.synchronize()


def branch_from_round(source_dir, target_dir):
    """Prepare ``target_dir`` so that ``train_net.py --resume`` with ``OUTPUT_DIR target_dir``
    continues from ``source_dir``'s round checkpoint (a run with PAIRED_BASELINE on).

    The branch runs the round and the continuation only: with the source's config and
    selector it ends with the source run's weights (the replay hook re-seeds every
    generator at the round), and with another selector or IMAGE_SCORE setting it is that
    selector's run from the same detector, at the cost of the continuation. Benchmarks use
    it to compare many selectors without training the warm-up again.
    """
    import shutil

    from .round_files import EVAL_BEFORE
    from .safe_load import LAST_CHECKPOINT

    source = os.path.join(source_dir, ROUND_CHECKPOINT + ".pth")
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"{source} is missing: a branch starts from the round checkpoint that a run with "
            "IMAGE_SCORE.PAIRED_BASELINE True saves at IMAGE_SCORE.START_ITER. Train the "
            "source run with it on.")
    os.makedirs(target_dir, exist_ok=True)
    if os.path.exists(os.path.join(target_dir, LAST_CHECKPOINT)):
        raise FileExistsError(f"{target_dir} already holds a run ({LAST_CHECKPOINT}); resume "
                              "it, or delete it to branch again.")
    def copy(src, dst):  # utils.atomic_write: a killed copy leaves no half file
        with open(src, "rb") as f:
            atomic_write(dst, lambda out: shutil.copyfileobj(f, out))

    copy(source, os.path.join(target_dir, ROUND_CHECKPOINT + ".pth"))
    # the same detector at the same point: its "before" evaluation is the source's
    before = os.path.join(source_dir, "image_score", EVAL_BEFORE)
    if os.path.isfile(before):
        copy(before, os.path.join(target_dir, "image_score", EVAL_BEFORE))
    atomic_write_text(os.path.join(target_dir, LAST_CHECKPOINT), ROUND_CHECKPOINT + ".pth")


# --------------------------------------------------------------------------- after training
def paired_config(cfg):
    """The main run's (scaled) config, supervised-only, in ``OUTPUT_DIR/paired_supervised``."""
    paired = cfg.clone()
    paired.defrost()
    paired.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, PAIRED_DIR)
    paired.IMAGE_SCORE.SELECTOR = "none"
    paired.IMAGE_SCORE.PAIRED_BASELINE = False
    paired.IMAGE_SCORE.EVAL_BEFORE = False
    paired.IMAGE_SCORE.ANALYZE_POOL = False
    if cfg.TEACHER.ENABLED:
        paired.TEACHER.PAIRED_BASELINE = False
        paired.TEACHER.SUPERVISED_ONLY = True
    paired.freeze()
    return paired


# Settings that do not change what the copy computes, or that may differ on a resume
_NOT_COMPARED = ("OUTPUT_DIR", "DATALOADER.NUM_WORKERS")


def _settings(cfg, prefix=""):
    """``{KEY: repr(value)}`` of every config key, but :data:`_NOT_COMPARED`."""
    out = {}
    for key, value in cfg.items():
        name = prefix + key
        if hasattr(value, "items"):
            out.update(_settings(value, name + "."))
        elif name not in _NOT_COMPARED:
            out[name] = repr(tuple(value) if isinstance(value, list) else value)
    return out


def _fingerprint(cfg):
    return hashlib.sha256(repr(sorted(_settings(cfg).items())).encode()).hexdigest()[:16]


def _read_result(directory, cfg):
    path = os.path.join(directory, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get("format_version") != RESULT_VERSION or \
            result.get("fingerprint") != _fingerprint(cfg):
        saved, now = result.get("settings", {}), _settings(cfg)
        changed = [f"{key}: {saved.get(key, '(not recorded)')} then, {now.get(key)} now"
                   for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
        raise RuntimeError(
            f"{path} is a finished paired baseline made with other settings than this run's:\n  "
            + "\n  ".join(changed[:10] or ["(another format version)"])
            + f"\nDelete {directory} to run the paired baseline again with the current "
            "settings, or resume with the original ones.")
    return result


def check_resumable(trainer):
    """Before training: a run resumed after the round needs the round checkpoint, unless
    its paired copy has finished already."""
    cfg = trainer.cfg
    start = start_iteration(cfg)
    if trainer.start_iter <= start:
        return
    directory = os.path.join(cfg.OUTPUT_DIR, PAIRED_DIR)
    ok = from_rank0(lambda: os.path.isfile(round_checkpoint_path(cfg))
                    or os.path.isfile(os.path.join(directory, RESULT_FILE)))
    if not ok:
        raise RuntimeError(
            f"{_switch_name(cfg)} is on and this run resumes at iteration "
            f"{trainer.start_iter}, after the round at iteration {start}, "
            f"but {round_checkpoint_path(cfg)} (saved at the round when PAIRED_BASELINE is on) "
            "is missing, so there is nothing to continue a supervised-only copy from. Set "
            f"{_switch_name(cfg)} False to go on without it, or train again from "
            "before the round.")


def run_paired_baseline(main):
    """Train the supervised-only copy of ``main`` (a finished :class:`Trainer`) from the
    round checkpoint, or reuse a finished one; every rank calls it. Returns the
    ``paired_result.json`` dict: ``eval_after`` (the copy's final test results) and where
    it ran."""
    cfg = paired_config(main.cfg)
    directory = cfg.OUTPUT_DIR
    done = from_rank0(lambda: _read_result(directory, cfg))
    if done is not None:
        logger.info("Paired supervised-only baseline found finished in %s; not repeated",
                    directory)
        return done
    checkpoint = round_checkpoint_path(main.cfg)
    if not from_rank0(lambda: os.path.isfile(checkpoint)):
        raise RuntimeError(f"{_switch_name(main.cfg)}: {checkpoint}, saved at the round, is "
                           "missing; the supervised-only copy cannot start.")
    main._trainer._data_loader_iter_obj = None  # stop the main run's loader workers
    paired = type(main)(cfg)
    paired.summary_title = f"Paired supervised-only copy ({PAIRED_DIR}/) summary:"
    if comm.is_main_process():
        atomic_write_text(os.path.join(directory, "config.yaml"), cfg.dump())
    if paired.checkpointer.has_checkpoint():  # a copy killed part-way: resume it
        logger.info("Resuming the paired supervised-only baseline in %s", directory)
        paired.resume_or_load(resume=True)
    else:
        logger.info("Paired supervised-only baseline: continuing %s without pseudo-labels "
                    "for iterations %d-%d into %s", checkpoint, start_iteration(cfg),
                    cfg.SOLVER.MAX_ITER - 1, directory)
        extra = paired.checkpointer.load(checkpoint)
        paired.start_iter = paired.iter + 1
        states = extra.get("rng_states") or []
        if len(states) == comm.get_world_size():
            set_rng_state(states[comm.get_rank()])
        else:
            logger.warning("The round checkpoint holds the RNG states of %d processes, this run "
                           "has %d: the paired copy's random stream differs from the main "
                           "run's.", len(states), comm.get_world_size())
    paired.train()
    result = {
        "format_version": RESULT_VERSION,
        "fingerprint": _fingerprint(cfg),
        "settings": _settings(cfg),
        "checkpoint": os.path.basename(checkpoint),
        "start_iteration": int(start_iteration(cfg)),
        "max_iter": int(cfg.SOLVER.MAX_ITER),
        "output_dir": directory,
        "eval_after": json_plain(getattr(paired, "_last_eval_results", None)),
    }
    if comm.is_main_process():
        atomic_write_json(os.path.join(directory, RESULT_FILE), result)
    comm.synchronize()
    del paired
    return result


# --------------------------------------------------------------------------- the report
def report_section(cfg, paired, eval_before, eval_after, resamples=DEFAULT_RESAMPLES,
                   seed=DEFAULT_SEED):
    """``report.json["paired_baseline"]``: both continuations' AP and, per VOC test set,
    the paired bootstrap of pseudo-labels (B) minus supervised-only (A)."""
    from ..evaluation import ap50_of

    what = ("a supervised-only copy continued from the same checkpoint at the round, for "
            "the same iterations, with the same random stream")
    if cfg.TEACHER.ENABLED:
        what = ("a supervised-only copy continued from the same checkpoint at the burn-in's "
                "end, for the same iterations, with the same labeled batches and seeds, trained "
                "on the labeled images' strong views, its EMA teacher evaluated")
    section = {
        "what": what,
        "checkpoint": paired["checkpoint"], "output_dir": PAIRED_DIR,
        "start_iteration": paired["start_iteration"],
        "iterations": paired["max_iter"] - paired["start_iteration"],
        "eval_after_supervised": paired["eval_after"],
        "comparisons": {},
    }
    missing = []
    for dataset in cfg.DATASETS.TEST:
        a = detections_path(os.path.join(cfg.OUTPUT_DIR, PAIRED_DIR, "inference"), dataset)
        b = detections_path(os.path.join(cfg.OUTPUT_DIR, "inference"), dataset)
        if os.path.isfile(a) and os.path.isfile(b):
            section["comparisons"][dataset] = compare_files(a, b, resamples=resamples, seed=seed)
        else:
            missing.append(dataset)
    if missing:
        section["not_compared"] = (f"{missing}: no per-image detections (Pascal VOC and COCO "
                                   "json test sets save them)")
    first = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    comparison = section["comparisons"].get(first)
    from ..evaluation.coco import metric_name

    summary = {"dataset": first, "metric": metric_name(first) if first else None,
               "AP50_before": ap50_of(eval_before),
               "AP50_with_pseudo_labels": ap50_of(eval_after),
               "AP50_supervised_only": ap50_of(paired["eval_after"])}
    if comparison is not None:
        s = comparison["AP50"]
        summary.update({
            "AP50_difference": s["difference"], "AP50_difference_ci95": s["ci"],
            "p_value": s["p_value"],
            "p_value_means": "one-sided: share of bootstrap resamples in which the pseudo-labels "
                             "do not beat supervised-only (ties half)",
            "test_images": comparison["test_set"]["num_images"],
            "resamples": comparison["bootstrap"]["resamples"],
            "AP_difference": comparison["AP"]["difference"],
            "AP_difference_ci95": comparison["AP"]["ci"]})
    section["summary"] = summary
    return section


def verdict(lo, hi):
    """What a 95% interval of (pseudo-labels - supervised-only) says, in words."""
    if hi < 0:
        return "the pseudo-labels cost AP50 (the interval is below 0)"
    if lo > 0:
        return "the pseudo-labels add AP50 (the interval is above 0)"
    return "no clear difference (the interval contains 0)"


def summary_lines(section):
    """The summary's lines about the paired baseline."""
    s = section["summary"]
    lines = []
    if s["AP50_supervised_only"] is not None:
        lines.append(f"  {s.get('metric') or 'VOC'} AP50 at the end:           "
                     f"{s['AP50_supervised_only']:.2f}  "
                     f"supervised only: a paired copy from the same checkpoint at iteration "
                     f"{section['start_iteration']}, same {section['iterations']} iterations "
                     f"and random stream ({section['output_dir']}/)")
    if "AP50_difference" in s:
        lo, hi = s["AP50_difference_ci95"]
        lines.append(f"  pseudo-labels - supervised:    {s['AP50_difference']:+.2f} AP50, 95% "
                     f"interval [{lo:+.2f}, {hi:+.2f}]: {verdict(lo, hi)}")
        lines.append(f"    (paired bootstrap over {s['test_images']} test images, "
                     f"{s['resamples']} resamples; one-sided p = {s['p_value']:.3f}, the share "
                     "of resamples in which the pseudo-labels do not beat supervised-only)")
    elif "not_compared" in section:
        lines.append(f"  (not compared image by image: {section['not_compared']})")
    return lines
