#!/usr/bin/env python
"""Online teacher-student training against its paired baselines, with every selector as the
teacher's filter (issue 17). Measured per seed, every arm from the same burn-in checkpoint.

For every seed:

1. one base run of ``--config`` (default ``configs/synthetic/teacher_V16tiny_quick.yaml``)
   with ``TEACHER.SELECTOR none`` and ``TEACHER.PAIRED_BASELINE True``: the supervised
   burn-in, the online phase over the whole pool (arm ``none``: plain Unbiased Teacher) and
   the paired supervised-only copy from the burn-in checkpoint (arm ``supervised``: the same
   iterations, labeled batches and seeds, trained on the labeled images' strong views);
2. every other arm *branches* from that run's burn-in checkpoint
   (``engine.paired.branch_from_round``) and trains the same online iterations:
   ``image_score``, ``softmax``, ``random`` (the teacher's filter keeps the top
   ``--top-fraction`` of the pool at every ranking), ``image_score_weighted`` (the whole
   pool, each image drawn in proportion to its image-score rank weight:
   ``TEACHER.RANK_WEIGHTING``), ``offline`` (the paper's one-shot image-score round from the
   same checkpoint, no teacher) and ``oracle`` (``TEACHER.TARGETS truth``: the pool's own
   annotations as the student's targets, the upper bound).

Per arm: test AP50 and AP (mean over seeds, per seed), the gain over ``supervised`` with a
95% interval over seeds and test images (``evaluation.bootstrap.seed_image_bootstrap``,
``seed_gain``), the share of the oracle's gain it recovers (``seed_share_of_gain``;
undefined, with the reason, when the oracle's own gain is not above 0), each filter's gain
over online ``none``, the teacher's pseudo-boxes per image over training, their precision
and recall against the pool's truth over training (pooled over the online phase: sum TP /
sum (TP + FP), and per quarter of it, from the running sums ``teacher/pseudo_{tp,fp,gt}_total``
the online step logs when the pool has truth; none for ``supervised`` and ``oracle``), and the
cost: seconds per iteration of the online phase (median of Detectron2's logged step times from
the burn-in on) against the supervised copy's, and of ``image_score`` against ``none``, with
the seconds the filter's rankings took.

    .venv/bin/python benchmarks/bench_teacher.py                    # 3 seeds, every arm
    .venv/bin/python benchmarks/bench_teacher.py --seeds 0 --arms none random oracle
    .venv/bin/python benchmarks/bench_teacher.py --config CONFIG --opts KEY VALUE ...

``--cost N`` measures only the cost, once, in this process: the config with a burn-in of
``N`` supervised iterations then ``N`` online ones, for ``TEACHER.SELECTOR none`` and for
``image_score`` (``--top-fraction``), every step timed (``run_step``, the first of each phase
left out), evaluation and checkpoints off; it writes ``--output`` (default
``benchmarks/results/teacher_cost.json``) with ``.md`` and ``.png`` beside it.

``--root`` is the datasets root holding ``synthetic_voc/`` (generated there if absent).
Writes ``--output`` (JSON) and, beside it, ``.png`` and ``.md``. Finished runs are reused
(their report.json), so an interrupted benchmark resumes where it stopped. Runs go
``--jobs`` at a time (default 2 on this 2-core machine, one thread each).
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_cli import (  # noqa: E402
    add_pool_argument, add_round_from_argument, add_threads_argument, git_commit, parse_pool,
    pool_run_dir, recorded_path, round_sources, save_figure, threads_per_run, write_results)
from bench_quality import (  # noqa: E402 (same runner)
    _error_bar, generate_datasets_of, log, share_text, train)

CONFIG = os.path.join("configs", "synthetic", "teacher_V16tiny_quick.yaml")
SUPERVISED, NONE, ORACLE, BASE = "supervised", "none", "oracle", "none"
FILTERS = ("image_score", "softmax", "random")
WEIGHTED = "image_score_weighted"  # compared with online none like the filters
OFFLINE = "offline"  # the paper's one-shot round, from the same burn-in checkpoint

# name -> (what it is, KEY VALUE overrides of the branch; None: made by the base run)
ARMS = {
    SUPERVISED: ("paired supervised-only copy from the burn-in checkpoint: the same iterations, "
                 "labeled batches and seeds, the labeled images' strong views, its EMA teacher "
                 "evaluated (TEACHER.PAIRED_BASELINE)", None),
    NONE: ("online over the whole pool: plain Unbiased Teacher (TEACHER.SELECTOR none)", None),
    "image_score": ("online, the teacher's filter: image_score's top fraction of the pool",
                    ["TEACHER.SELECTOR", "image_score"]),
    "softmax": ("online, the teacher's filter: softmax's top fraction of the pool",
                ["TEACHER.SELECTOR", "softmax"]),
    "random": ("online, the teacher's filter: a random fraction of the pool",
               ["TEACHER.SELECTOR", "random"]),
    WEIGHTED: ("online over the whole pool, each image drawn in proportion to its image-score "
               "rank weight 1 - r/N (TEACHER.RANK_WEIGHTING)",
               ["TEACHER.SELECTOR", "image_score", "TEACHER.RANK_WEIGHTING", "True",
                "TEACHER.TOP_FRACTION", "1.0"]),
    OFFLINE: ("the paper's one-shot round from the same burn-in checkpoint, no teacher: "
               "image_score selects 30% of the pool once (GRID 8x8, BOX_SCORE_THRESH 0.5, as "
               "configs/synthetic/imagescore_V16tiny_headroom.yaml), their pseudo-labels join "
               "the labeled images for the same iterations",
               ["TEACHER.ENABLED", "False", "IMAGE_SCORE.ENABLED", "True",
                "IMAGE_SCORE.SELECTOR", "image_score", "IMAGE_SCORE.TOP_FRACTION", "0.3",
                "IMAGE_SCORE.GRID", "(8, 8)", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.5",
                "IMAGE_SCORE.ANALYZE_POOL", "True"]),
    ORACLE: ("online with the pool's truth as the student's targets (TEACHER.TARGETS truth): "
             "the upper bound", ["TEACHER.TARGETS", "truth"]),
}
BASE_OVERRIDES = ["TEACHER.SELECTOR", "none", "TEACHER.PAIRED_BASELINE", "True"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS",
                                                    os.path.join(ROOT, "datasets")),
                   help="datasets root holding synthetic_voc/ (default: $DETECTRON2_DATASETS "
                        "or ./datasets; generated there if absent)")
    p.add_argument("--config", default=CONFIG,
                   help=f"the protocol measured: a TEACHER.ENABLED config (default {CONFIG}); "
                        "its datasets must be registered")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
                   help="arms to run (supervised and none always run: the base run makes them)")
    p.add_argument("--top-fraction", type=float, default=0.5,
                   help="TEACHER.TOP_FRACTION of the filtered arms (default 0.5)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    add_threads_argument(p)
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "bench_teacher"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_teacher.json"))
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="extra config overrides for every run (KEY VALUE pairs)")
    p.add_argument("--resamples", type=int, default=1000,
                   help="resamples of the bootstrap over seeds and test images (default 1000)")
    p.add_argument("--cost", type=int, default=0, metavar="N",
                   help="measure only the cost: N supervised then N online iterations, timed "
                        "(default output benchmarks/results/teacher_cost.json)")
    add_pool_argument(p, "shifted IMAGE_SCORE.UNLABELED_DATASETS "
                         "'(\"synthetic_headroom_shifted_unlabeled\",)'; online none too")
    add_round_from_argument(p, "output/bench_headroom/seed{seed}/same/oracle_all, whose "
                               "warm-up then is the burn-in")
    args = p.parse_args(argv)
    args.other_pool = parse_pool(p, args)
    if args.cost and args.output == p.get_default("output"):
        args.output = os.path.join(ROOT, "benchmarks", "results", "teacher_cost.json")
    if args.cost < 0 or args.cost == 1:
        p.error(f"--cost {args.cost}: use N >= 2 iterations a phase (the first is left out)")
    if not 0 < args.top_fraction <= 1:
        p.error(f"--top-fraction {args.top_fraction}: use a fraction in (0, 1]")
    if len(args.opts) % 2:
        p.error(f"--opts takes KEY VALUE pairs; got {len(args.opts)} words")
    args.arms = [SUPERVISED, NONE] + [a for a in args.arms if a not in (SUPERVISED, NONE)]
    return args


def arm_overrides(name, top_fraction, burn_in=None):
    """The KEY VALUE overrides of a branch arm (on top of the config and --opts); the
    offline round takes place at ``burn_in`` (the config's TEACHER.BURN_IN_ITER)."""
    extra = ["TEACHER.TOP_FRACTION", str(top_fraction)] if name in FILTERS else []
    if name == OFFLINE:
        extra = ["IMAGE_SCORE.START_ITER", str(burn_in)]
    own = ["TEACHER.SELECTOR", "none"] if ARMS[name][1] is None else ARMS[name][1]
    return own + extra + ["TEACHER.PAIRED_BASELINE", "False"]


def arm_dir(work_dir, seed, name, pool=None):
    """Where an arm's run of ``seed`` lives: ``supervised`` is the base run's paired copy,
    ``none`` the base run itself, the others its branches; with another pool (``--pool``)
    every arm but ``supervised`` is a branch under ``seed<s>/pool_<POOL>/``."""
    from imagescore_det.engine.paired import PAIRED_DIR

    base = pool_run_dir(work_dir, seed, BASE)
    if name == SUPERVISED:
        return os.path.join(base, PAIRED_DIR)
    return base if name == BASE and not pool else pool_run_dir(work_dir, seed, name, pool)


# --------------------------------------------------------------------------- running
def check_protocol(config, opts):
    """Load ``config`` as the base run will: exit (status 1, no traceback) naming the config
    and the fix when it is not a teacher-student config that can run here."""
    from imagescore_det.engine import load_config

    shown = f"--config {config}" + (f" --opts {' '.join(opts)}" if opts else "")
    try:
        cfg = load_config(os.path.join(ROOT, config), BASE_OVERRIDES + list(opts))
    except (ValueError, KeyError, AssertionError) as e:
        sys.exit(f"error: {shown} does not load for bench_teacher: {str(e).rstrip('.')}. Pass "
                 f"a TEACHER.ENABLED config (e.g. {CONFIG}) and KEY VALUE pairs it knows.")
    if not cfg.TEACHER.ENABLED:
        sys.exit(f"error: {shown} is not a teacher-student config (TEACHER.ENABLED False). "
                 f"Pass one, e.g. {CONFIG}.")
    return cfg


def run_seed(seed, arms, work_dir, threads, extra, pool, config, top_fraction, other_pool=None,
             burn_in=None, round_from=None):
    """The base run of ``seed`` (arms none and supervised), then its branches (submitted).
    With ``other_pool`` (NAME, [KEY VALUE ...]) ``none`` is a branch too, and every branch
    trains with those overrides. With ``round_from`` (a run folder) the base run starts from
    that run's round checkpoint: its burn-in is not trained."""
    from imagescore_det.engine.paired import branch_from_round
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT

    base_dir = arm_dir(work_dir, seed, BASE)
    os.makedirs(os.path.dirname(base_dir), exist_ok=True)
    resume = os.path.isfile(os.path.join(base_dir, LAST_CHECKPOINT))
    if round_from and not resume:
        branch_from_round(round_from, base_dir)
        resume = True
    train(base_dir, BASE_OVERRIDES, seed, resume, threads, extra, config)
    pool_name, pool_opts = other_pool or (None, [])
    futures = []
    for name in arms:
        if name == SUPERVISED or (name == NONE and not pool_name):
            continue
        out = arm_dir(work_dir, seed, name, pool_name)
        if not os.path.exists(os.path.join(out, LAST_CHECKPOINT)):
            branch_from_round(base_dir, out)
        futures.append(pool.submit(train, out, arm_overrides(name, top_fraction, burn_in)
                                   + pool_opts, seed, True, threads, extra, config))
    return futures


# --------------------------------------------------------------------------- measuring
def step_seconds(metrics_path, first_iteration):
    """Median of Detectron2's logged step times (``time``, every 20 iterations and at the
    end) at iterations >= ``first_iteration``; None when none is logged there."""
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    times = [r["time"] for r in rows if "time" in r and r.get("iteration", -1) >= first_iteration]
    return float(np.median(times)) if times else None


def mean_logged(metrics_path, key):
    with open(metrics_path) as f:
        values = [row[key] for row in map(json.loads, f) if key in row]
    return float(np.mean(values)) if values else None


PSEUDO_TOTALS = ("teacher/pseudo_tp_total", "teacher/pseudo_fp_total", "teacher/pseudo_gt_total")


def pseudo_precision_over_training(metrics_path, burn_in, max_iter, parts=4):
    """The teacher's pseudo-boxes against the pool's truth over the online phase, from the
    running sums ``teacher/pseudo_{tp,fp,gt}_total`` of metrics.json (logged every 20 steps and
    at the end): pooled (sum TP / sum (TP + FP), sum TP / sum true boxes) and per ``parts``
    equal spans of ``[burn_in, max_iter)``. A span's bounds snap to the logged rows: it counts
    the steps after the last row before its start up to its last row (``first_iteration`` /
    ``last_iteration`` say which; None when no row falls in it). All None when nothing was
    logged (no truth in the pool, the supervised copy, TARGETS truth)."""
    rows = {}
    with open(metrics_path) as f:
        for row in map(json.loads, filter(str.strip, f)):
            if all(k in row for k in PSEUDO_TOTALS):  # a resumed run's replayed rows: the same
                rows[row["iteration"]] = tuple(int(row[k]) for k in PSEUDO_TOTALS)
    if not rows:
        return {"pseudo_precision": None, "pseudo_recall": None, "pseudo_counts": None,
                "pseudo_precision_by_quarter": None}
    logged = sorted(rows)

    def before(iteration):  # the running sums after the steps < iteration: (last step, sums)
        done = [i for i in logged if i < iteration]
        return (done[-1], rows[done[-1]]) if done else (burn_in - 1, (0, 0, 0))

    def span(start, end):
        (first, a), (last, b) = before(start), before(end)
        tp, fp, gt = (y - x for x, y in zip(a, b))
        return {"first_iteration": first + 1 if last > first else None,
                "last_iteration": last if last > first else None, "tp": tp, "fp": fp, "gt": gt,
                "precision": tp / (tp + fp) if tp + fp else None,
                "recall": tp / gt if gt else None}

    bounds = [burn_in + int(round(k * (max_iter - burn_in) / parts)) for k in range(parts + 1)]
    pooled = span(burn_in, max_iter)
    return {"pseudo_precision": pooled["precision"], "pseudo_recall": pooled["recall"],
            "pseudo_counts": {k: pooled[k] for k in ("tp", "fp", "gt")},
            "pseudo_precision_by_quarter": [span(a, b) for a, b in zip(bounds, bounds[1:])]}


def measure(run_dir):
    """One arm's numbers for one seed, from its report.json and metrics.json."""
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    bbox = (report.get("eval_after") or {}).get("bbox", {})
    teacher = report.get("teacher") or {}
    metrics = os.path.join(run_dir, "metrics.json")
    rounds = report.get("rounds") or [{}]  # the offline arm: its round ends the burn-in
    burn_in = teacher.get("burn_in_iter", rounds[0].get("iteration", 0))
    max_iter = report["config"]["max_iter"]
    return {"ap50": bbox.get("AP50"), "ap": bbox.get("AP"),
            "seconds_per_iteration": step_seconds(metrics, burn_in),
            "pseudo_boxes_per_image": mean_logged(metrics, "teacher/pseudo_boxes_per_image"),
            "ranking_seconds": sum(r.get("seconds", 0.0) for r in teacher.get("refreshes", [])),
            "online_iterations": max_iter - burn_in,
            **({"offline_pseudo_precision": rounds[0].get("pseudo_precision"),
                "offline_pseudo_images": rounds[0].get("num_pseudo_images")}
               if "pseudo_precision" in rounds[0] else {}),
            **pseudo_precision_over_training(metrics, burn_in, max_iter)}


def summarize(boot, arms, confidence=0.95):
    """From :func:`~imagescore_det.evaluation.bootstrap.seed_image_bootstrap`'s ``boot``:
    per arm the gain over ``supervised`` (and the share of the oracle's gain), and per filter
    the gain over online ``none``."""
    from imagescore_det.evaluation.bootstrap import seed_gain, seed_share_of_gain

    out = {"bootstrap": {
        "unit": "seeds and test images: each resample draws the seeds and the test images with "
                "replacement, every run's AP recomputed on the drawn images and averaged over "
                "the drawn seeds", "resamples": boot.get("resamples"), "seed": boot.get("seed"),
        "confidence": confidence}, "over_supervised": {}, "over_none": {}}
    for name in arms:
        if name == SUPERVISED:
            continue
        row = {key: seed_gain(boot, SUPERVISED, name, key, confidence) for key in ("AP50", "AP")}
        if ORACLE in arms and name != ORACLE:
            row["share_of_oracle"] = seed_share_of_gain(boot, SUPERVISED, name, ORACLE,
                                                        confidence=confidence)
        out["over_supervised"][name] = row
        if name in FILTERS or name in (WEIGHTED, OFFLINE):
            out["over_none"][name] = seed_gain(boot, NONE, name, "AP50", confidence)
    return out


def cost(per_arm):
    """Mean over seeds of the per-seed ratios: online ``none`` over ``supervised`` and
    ``image_score`` over ``none`` (seconds per iteration of the online phase)."""
    def ratios(a, b):
        pairs = zip(per_arm.get(a, []), per_arm.get(b, []))
        values = [x["seconds_per_iteration"] / y["seconds_per_iteration"] for x, y in pairs
                  if x["seconds_per_iteration"] and y["seconds_per_iteration"]]
        return {"mean": float(np.mean(values)), "per_seed": values} if values else None

    return {"online_over_supervised": ratios(NONE, SUPERVISED),
            "image_score_over_none": ratios("image_score", NONE),
            "targets": {"online_over_supervised": 2.5, "image_score_over_none": 1.05}}


def seed_bootstrap(work_dir, seeds, arms, resamples, pool=None):
    from imagescore_det.evaluation.bootstrap import seed_image_bootstrap
    from imagescore_det.evaluation.detections import find_detections, load_detections

    runs = [{name: load_detections(find_detections(arm_dir(work_dir, s, name, pool)))
             for name in arms} for s in seeds]
    return seed_image_bootstrap(runs, resamples=resamples)


# --------------------------------------------------------------------------- the cost
def phase_seconds(times, burn_in):
    """``{"supervised", "online"}``: the median seconds of ``run_step`` over the iterations
    of each phase, the first of each left out (loader start, the teacher's copy)."""
    sup = [t for it, t in times if 0 < it < burn_in]
    online = [t for it, t in times if it > burn_in]
    return {"supervised": float(np.median(sup)) if sup else None,
            "online": float(np.median(online)) if online else None,
            "iterations": {"supervised": len(sup), "online": len(online)}}


def timed_run(config, opts, iterations, seed, out_dir):
    """One run of ``iterations`` supervised + ``iterations`` online steps in this process:
    ``(phase_seconds, the filter's ranking seconds)``."""
    import time as _time

    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine import load_config
    from imagescore_det.teacher.trainer import TeacherTrainer

    cfg = load_config(os.path.join(ROOT, config), list(opts) + [
        "TEACHER.BURN_IN_ITER", str(iterations), "SOLVER.MAX_ITER", str(2 * iterations),
        "TEACHER.PAIRED_BASELINE", "False", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100000", "SEED", str(seed), "OUTPUT_DIR", out_dir])
    cfg.freeze()
    seed_all_rng(seed)
    trainer = TeacherTrainer(cfg)
    trainer.resume_or_load(resume=False)
    inner, times = trainer._trainer, []
    step = inner.run_step

    def timed():
        start = _time.perf_counter()
        step()
        times.append((inner.iter, _time.perf_counter() - start))

    inner.run_step = timed
    trainer.train()
    return phase_seconds(times, iterations), sum(r["seconds"] for r in trainer.state.history)


def refresh_period_for(target, none_online, score_online, ranking_seconds):
    """The fewest online iterations between two rankings at which the filtered phase costs at
    most ``target`` times online ``none``: ``(score_online + ranking / P) / none_online <=
    target`` gives ``P >= ranking / (target * none_online - score_online)``; None when the
    filtered step alone is already over the target (no period reaches it)."""
    room = target * none_online - score_online
    if room <= 0:
        return None
    return ranking_seconds / room


def measure_cost(args):
    import tempfile

    import torch

    runs, load_before = {}, os.getloadavg()
    for selector in ("none", "image_score"):
        opts = list(args.opts) + ["TEACHER.SELECTOR", selector] + (
            ["TEACHER.TOP_FRACTION", str(args.top_fraction)] if selector != "none" else [])
        with tempfile.TemporaryDirectory() as out:
            seconds, ranking = timed_run(args.config, opts, args.cost, args.seeds[0], out)
        runs[selector] = dict(seconds, ranking_seconds=ranking)
        log(f"{selector}: {runs[selector]}")
    none, score = runs["none"], runs["image_score"]
    online = args.cost
    import platform

    return {
        "benchmark": "teacher_cost", "commit": git_commit(), "config": recorded_path(args.config),
        "overrides": args.opts, "seed": args.seeds[0], "iterations_per_phase": args.cost,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
                   f"{torch.get_num_threads()}",
        "command": " ".join(["benchmarks/bench_teacher.py"] + list(args.argv)),
        # other jobs on the cores inflate every step (the ratios less so): the load says how many
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "runs": runs,
        "online_over_supervised": none["online"] / none["supervised"],
        "target_online_over_supervised": 2.5,
        # image_score's online phase: its steps plus its ranking spread over the phase
        "image_score_over_none": (score["online"] + score["ranking_seconds"] / online)
        / (none["online"] + none["ranking_seconds"] / online),
        "target_image_score_over_none": 1.05,
        # the refresh period (TEACHER.REFRESH, online iterations a ranking serves) from
        # which the filter stays within the target: rankings are the filter's only extra cost
        "refresh_period_for_target": refresh_period_for(1.05, none["online"], score["online"],
                                                        score["ranking_seconds"]),
    }


def cost_markdown(c):
    none, score = c["runs"]["none"], c["runs"]["image_score"]
    return "\n".join([
        "# bench_teacher --cost: seconds per iteration of the online mode", "",
        f"Command: `{c['command']}` at commit {c.get('commit', 'not recorded')}  ",
        f"Config: `{c['config']}` (overrides: "
        f"{' '.join(c['overrides']) or 'none'}); seed {c['seed']}; machine: {c['machine']}; "
        f"load average (1, 5, 15 min) before {_loads(c.get('load_average_before'))}, after "
        f"{_loads(c.get('load_average_after'))}" + (f". {c['note']}" if c.get("note") else "."),
        "",
        f"{c['iterations_per_phase']} supervised (burn-in) then {c['iterations_per_phase']} "
        "online iterations; the median seconds of a training step (`run_step`), the first "
        "iteration of each phase left out; evaluation and checkpoints off.", "",
        "| run | supervised s/iter | online s/iter | online / supervised | ranking s |",
        "| --- | --- | --- | --- | --- |",
        f"| SELECTOR none | {none['supervised']:.3f} | {none['online']:.3f} | "
        f"{none['online'] / none['supervised']:.2f}x | {none['ranking_seconds']:.1f} |",
        f"| SELECTOR image_score | {score['supervised']:.3f} | {score['online']:.3f} | "
        f"{score['online'] / score['supervised']:.2f}x | {score['ranking_seconds']:.1f} |", "",
        f"Online (none) over a supervised step: **{c['online_over_supervised']:.2f}x** (target "
        f"≤ {c['target_online_over_supervised']}). Online image_score over none, its ranking "
        f"spread over the {c['iterations_per_phase']} online iterations: "
        f"**{c['image_score_over_none']:.2f}x** (target ≤ {c['target_image_score_over_none']};"
        " over a longer online phase the one ranking weighs less)."]
        + ([f"With one ranking per **{c['refresh_period_for_target']:.0f}** or more online "
            "iterations (TEACHER.REFRESH; the whole online phase when it is 0), image_score "
            "costs at most 1.05x none."] if c.get("refresh_period_for_target") else [])) + "\n"


def _loads(values):
    return "-" if not values else "/".join(f"{v:.1f}" for v in values)


def cost_plot(path, c):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels, values = [], []
    for selector, r in c["runs"].items():
        labels += [f"{selector}\nsupervised", f"{selector}\nonline"]
        values += [r["supervised"], r["online"]]
    ax.bar(range(len(values)), values, color=["#bbbbbb", "#3182bd"] * (len(values) // 2))
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("seconds per iteration (median)")
    ax.set_title(f"online / supervised = {c['online_over_supervised']:.2f}x", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- reporting
def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _num(value, digits=2, signed=False):
    return "-" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


def markdown(result):
    seeds, gains = result["seeds"], result["gains"]
    pct = f"{100 * gains['bootstrap']['confidence']:g}%"
    lines = [f"# bench_teacher: online teacher-student against its paired baselines "
             f"({len(seeds)} seed(s): {', '.join(map(str, seeds))})", "",
             f"Command: `{result['command']}`"
             + (f" at commit {result['commit']}" if result.get("commit") else "") + "  ",
             f"Config: `{result['config']}` (overrides: {' '.join(result['overrides']) or 'none'}"
             + (f"; pool `{result['pool']['name']}`: {' '.join(result['pool']['overrides'])}, "
                "every arm but `supervised` branched from the base run's burn-in checkpoint"
                if result.get("pool") else "")
             + (f"; every seed's burn-in is the round checkpoint of `{result['round_from']}`, "
                "not trained again" if result.get("round_from") else "") + ")"
             f"; machine: {result['machine']}; wall time {result['wall_seconds'] / 60:.0f} min.",
             "", f"Every arm from the same burn-in checkpoint for the same "
             f"{result['online_iterations']} iterations. Gain: the arm minus `supervised` in "
             f"test AP50, mean over seeds, {pct} interval over seeds and test images "
             f"({gains['bootstrap']['resamples']} resamples); share: (arm − supervised) / "
             "(oracle − supervised).", "",
             f"| arm | AP50 | AP | AP50 gain over supervised [{pct}] | p | share of oracle's "
             "gain | s/iter | pseudo-boxes/image | pseudo-box precision | precision by quarter "
             "|", "|" + " --- |" * 10]
    for name in result["arms"]:
        rows = result["runs"][name]
        g = gains["over_supervised"].get(name)
        gain = (f"{g['AP50']['difference']:+.2f} [{g['AP50']['ci'][0]:+.2f}, "
                f"{g['AP50']['ci'][1]:+.2f}] | {g['AP50']['p_value']:.3f}") if g else "- | -"
        share = "1 (reference)" if name == ORACLE else share_text((g or {}).get("share_of_oracle"))
        lines.append(f"| {name} | {_num(_mean(rows, 'ap50'))} | {_num(_mean(rows, 'ap'))} | "
                     f"{gain} | {share if g else '-'} | "
                     f"{_num(_mean(rows, 'seconds_per_iteration'), 3)} | "
                     f"{_num(_mean(rows, 'pseudo_boxes_per_image'))} | "
                     f"{_num(_mean(rows, 'pseudo_precision'), 3)} | {_quarters(rows)} |")
    if gains["over_none"]:
        lines += ["", f"Filters against online `none` (AP50, {pct}):", "",
                  "| filter | gain over none | interval | p |", "| --- | --- | --- | --- |"]
        for name, g in gains["over_none"].items():
            lines.append(f"| {name} | {g['difference']:+.2f} | [{g['ci'][0]:+.2f}, "
                         f"{g['ci'][1]:+.2f}] | {g['p_value']:.3f} |")
    c = result["cost"]
    lines += ["", "Cost (seconds per iteration of the online phase, per-seed ratios, mean): "
              f"online `none` / supervised = {_ratio(c['online_over_supervised'])} "
              f"(target ≤ {c['targets']['online_over_supervised']}); `image_score` / `none` = "
              f"{_ratio(c['image_score_over_none'])} (target ≤ "
              f"{c['targets']['image_score_over_none']}).", "",
              "Pseudo-box precision: the teacher's boxes (score >= TEACHER.SCORE_THRESH) "
              "against the pool's truth (IoU >= 0.5, same class, each true box once), sum TP / "
              "sum (TP + FP) over the online phase and per quarter of it (first … last), mean "
              "over seeds; `-` where nothing is measured (no pseudo-boxes: supervised, oracle).",
              "", "Arms:", ""]
    lines += [f"* `{k}`: {ARMS[k][0]}" for k in result["arms"]]
    return "\n".join(lines) + "\n"


def _quarters(rows):
    """Per quarter of the online phase the mean over seeds of its precision, ' / '-joined."""
    per_seed = [r["pseudo_precision_by_quarter"] for r in rows
                if r.get("pseudo_precision_by_quarter")]
    if not per_seed:
        return "-"
    return " / ".join(_num(_mean([q[k] for q in per_seed], "precision"), 3)
                      for k in range(len(per_seed[0])))


def _ratio(r):
    return "-" if not r else f"{r['mean']:.2f}x"


def plot(path, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, name in enumerate(arms):
        values = [r["ap50"] for r in result["runs"][name] if r.get("ap50") is not None]
        if values:
            axes[0].bar(i, np.mean(values), color="#3182bd" if name != SUPERVISED else "#bbbbbb")
            axes[0].scatter([i] * len(values), values, color="k", s=10, zorder=3)
        g = result["gains"]["over_supervised"].get(name)
        if g:
            axes[1].bar(i, g["AP50"]["difference"], color="#9ecae1")
            _error_bar(axes[1], i, g["AP50"]["difference"], g["AP50"]["ci"])
    for ax, title in zip(axes, ("test AP50 (bars: mean; dots: seeds)",
                                "AP50 gain over supervised (95%, seeds x test images)")):
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[1].axhline(0.0, color="grey", lw=0.8)
    fig.suptitle(f"bench_teacher, seeds {result['seeds']}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.root = os.path.abspath(args.root)
    # before the package's import: its built-in datasets are registered under this root
    os.environ["DETECTRON2_DATASETS"] = args.root
    pool_name, pool_opts = args.other_pool or (None, [])
    cfg = check_protocol(args.config, list(args.opts) + pool_opts)
    # the synthetic data the protocol uses (the headroom datasets too), as bench_quality does
    generate_datasets_of(cfg, args.root, keep_existing=True)
    if args.cost:
        result = measure_cost(args)
        write_results(args.output, result, cost_plot, cost_markdown)
        return result
    work_dir = os.path.abspath(args.work_dir)
    sources = round_sources(args.round_from, args.seeds, cfg)
    threads = threads_per_run(args)
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        seeds = [pool.submit(run_seed, s, args.arms, work_dir, threads, args.opts, pool,
                             args.config, args.top_fraction, args.other_pool,
                             cfg.TEACHER.BURN_IN_ITER, sources[s])
                 for s in args.seeds]
        for f in [f for s in seeds for f in s.result()]:
            f.result()
    runs = {name: [measure(arm_dir(work_dir, s, name, pool_name)) for s in args.seeds]
            for name in args.arms}
    import platform

    result = {
        "benchmark": "teacher", "commit": git_commit(), "seeds": args.seeds,
        "config": recorded_path(args.config),
        "overrides": args.opts, "root": recorded_path(args.root), "arms": args.arms,
        "pool": {"name": pool_name, "overrides": pool_opts} if pool_name else None,
        "round_from": recorded_path(args.round_from and os.path.abspath(args.round_from)),
        "top_fraction": args.top_fraction,
        "online_iterations": cfg.SOLVER.MAX_ITER - cfg.TEACHER.BURN_IN_ITER,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{args.jobs} runs at a time ({threads} thread(s) each)",
        "wall_seconds": time.time() - started,
        "command": " ".join(["benchmarks/bench_teacher.py"] + args.argv),
        "arm_settings": {k: {"what": ARMS[k][0], "overrides": ARMS[k][1]} for k in args.arms},
        "gains": summarize(seed_bootstrap(work_dir, args.seeds, args.arms, args.resamples,
                                          pool_name), args.arms),
        "cost": cost(runs),
        "pseudo_precision": "per run: the teacher's boxes against the pool's truth, sum TP / "
                            "sum (TP + FP) over the online phase (pseudo_precision) and per "
                            "quarter of it (pseudo_precision_by_quarter)",
        "runs": runs,
    }
    write_results(args.output, result, plot, markdown)
    return result


if __name__ == "__main__":
    main()
