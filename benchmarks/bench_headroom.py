#!/usr/bin/env python
"""Is there room for a selector to help? The headroom protocol, measured.

A selector can only show a gain where better labels would help. On the headroom datasets
(``imagescore_det.data.HEADROOM_DATASETS``: 40 labeled images, a pool of 460, 200 test
images; the pool from the labeled data's distribution, or 40% shifted domain) with the
headroom schedule (``configs/synthetic/*_V16tiny_headroom.yaml``), per seed:

1. the warm-up on the 40 labeled images, then the whole pool labeled with its ground truth
   (``oracle``, ``TOP_FRACTION 1.0``: ``oracle_all``) for the continuation, with
   ``PAIRED_BASELINE`` on: its paired supervised-only copy from the same round checkpoint is
   the ``supervised`` arm (training longer on the 40 images);
2. branches from that round checkpoint (``engine.paired.branch_from_round``: the same
   detector, the same iterations and random stream): the oracle at the selectors' image
   count (``oracle_30``: random's 30% of the pool with their true boxes) and, for the
   shifted pool, both oracles again with ``IMAGE_SCORE.UNLABELED_DATASETS`` the shifted
   pool (the labeled and test images of the two variants are the same files, so one
   warm-up and one supervised continuation serve both);
3. the plateau check: the warm-up stretched twice as long (``bench_plateau.py``'s
   ``overrides``, supervised only; it starts from the base run's checkpoint before the
   first LR step, where the two schedules are still the same); the warm-up is at its
   plateau when that adds at most ~2 AP50. Then both oracle arms and their paired
   supervised copy continue from the end of that longer warm-up too (``x2_same``: its
   final checkpoint is the round checkpoint; ``--no-x2-arms`` skips them), which measures
   the room with a detector closer to its plateau when the warm-up is not at it.

Reported per pool variant, arm and seed: test AP50 at the end and the gain over the paired
supervised continuation with its 95% paired bootstrap interval over the test images
(``evaluation.bootstrap``, as ``tools/compare_runs.py``); then mean, standard deviation and
range over the seeds, and whether the issue's bar is met (whole-pool oracle at least 10 AP50
above supervised with every seed's interval above 0).

    .venv/bin/python benchmarks/bench_headroom.py                      # seeds 0 1 2, both pools
    .venv/bin/python benchmarks/bench_headroom.py --seeds 0 --pools same

``--root`` is the datasets root; the headroom datasets are generated under it if absent.
Writes ``--output`` (JSON) and, beside it, ``.png`` and ``.md``. Finished runs are reused
(their ``report.json`` / ``model_final.pth``), so an interrupted benchmark resumes; runs go
``--jobs`` at a time (one thread each on a 2-core machine).
"""
import argparse
import concurrent.futures
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from _bench_cli import (  # noqa: E402 (benchmarks/, beside this file)
    add_threads_argument, git_commit, log, run_train_net, save_figure, threads_per_run,
    write_results)

CONFIG = os.path.join("configs", "synthetic", "oracle_V16tiny_headroom.yaml")
PLATEAU_CONFIG = os.path.join("configs", "synthetic", "supervised_V16tiny_headroom.yaml")
SUPERVISED = "supervised"
BASE_POOL, BASE_ARM = "same", "oracle_all"
# pool variant -> KEY VALUE overrides (the config's pool is the same-distribution one)
POOLS = {
    "same": ("pool from the labeled data's distribution (synthetic_headroom_unlabeled)", []),
    "shifted": ("40% of the pool from the shifted domain (synthetic_headroom_shifted_unlabeled)",
                ["IMAGE_SCORE.UNLABELED_DATASETS", '("synthetic_headroom_shifted_unlabeled",)']),
}
# arm -> KEY VALUE overrides on top of CONFIG (the oracle selector, TOP_FRACTION 1.0)
ARMS = {
    "oracle_all": ("the whole pool labeled with its ground truth", []),
    "oracle_30": ("random's 30% of the pool with their true boxes (the selectors' image count)",
                  ["IMAGE_SCORE.TOP_FRACTION", "0.3"]),
}
# the same two arms continued from the warm-up x2 (the plateau check's run), same pool
X2 = "x2_same"
X2_WHAT = ("the same-distribution pool, both arms continued from the warm-up x2 (the plateau "
           "check's final checkpoint), against their own paired supervised copy")
BAR_GAIN = 10.0  # the bar for the whole-pool oracle over supervised (AP50)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS",
                                                    os.path.join(ROOT, "datasets")),
                   help="datasets root; the headroom datasets (synthetic_headroom/, "
                        "synthetic_headroom_shifted/) are generated there if absent "
                        "(default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS),
                   help="pool variants, in the order they run (default: same shifted)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    add_threads_argument(p)
    p.add_argument("--plateau-seeds", type=int, nargs="*", default=None, metavar="SEED",
                   help="the seeds whose warm-up also runs twice as long (the plateau check; "
                        "default: every seed; none when given empty)")
    p.add_argument("--no-x2-arms", action="store_true",
                   help="do not continue the oracle arms from the end of the warm-up x2 "
                        "(they are run for every --plateau-seeds seed by default)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="extra config overrides for every run (use another --work-dir: "
                        "finished runs are reused)")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "bench_headroom"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_headroom.json"))
    args = p.parse_args(argv)
    if len(args.opts) % 2:
        p.error(f"--opts takes KEY VALUE pairs; got an odd number: {args.opts}")
    if args.plateau_seeds is None:
        args.plateau_seeds = list(args.seeds)
    elif not set(args.plateau_seeds) <= set(args.seeds):
        p.error(f"--plateau-seeds {args.plateau_seeds} must be among --seeds {args.seeds}")
    return args


def run_dir(work_dir, seed, pool, arm):
    return os.path.join(work_dir, f"seed{seed}", pool, arm)


def arm_overrides(seed, pool, arm, out_dir, extra=()):
    """train_net.py KEY VALUE pairs of one arm of one seed (on top of CONFIG). The base run
    (same pool, whole-pool oracle) trains the warm-up and keeps the paired supervised copy;
    every other arm is a branch of its round checkpoint."""
    base = (pool, arm) == (BASE_POOL, BASE_ARM)
    return ["SEED", str(seed), "IMAGE_SCORE.PAIRED_BASELINE", str(base),
            *POOLS[pool][1], *ARMS[arm][1], "OUTPUT_DIR", out_dir, *extra]


def train(out_dir, config, opts, resume, threads, done_file="report.json"):
    """``tools/train_net.py`` with ``opts`` into ``out_dir`` unless ``done_file`` is there;
    its log in ``out_dir``.log."""
    if os.path.isfile(os.path.join(out_dir, done_file)):
        log(f"[{os.path.relpath(out_dir, ROOT)}] finished before; reused")
        return
    run_train_net(out_dir, config, opts, resume, threads)


def run_seed(seed, pools, work_dir, threads, extra, pool_executor):
    """The base run of ``seed``, then its branches (submitted to ``pool_executor``)."""
    from imagescore_det.engine.paired import branch_from_round
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT

    base_dir = run_dir(work_dir, seed, BASE_POOL, BASE_ARM)
    resume = os.path.isfile(os.path.join(base_dir, LAST_CHECKPOINT))
    train(base_dir, CONFIG, arm_overrides(seed, BASE_POOL, BASE_ARM, base_dir, extra), resume,
          threads)
    futures = []
    for pool in pools:
        for arm in ARMS:
            if (pool, arm) == (BASE_POOL, BASE_ARM):
                continue
            out = run_dir(work_dir, seed, pool, arm)
            if not os.path.exists(os.path.join(out, LAST_CHECKPOINT)):
                branch_from_round(base_dir, out)
            futures.append(pool_executor.submit(
                train, out, CONFIG, arm_overrides(seed, pool, arm, out, extra), True, threads))
    return futures


SHARED_PREFIX = "shared_prefix.json"


def share_warmup_prefix(seed, work_dir, extra=()):
    """Start the seed's warm-up x2 from its base run's checkpoint just before the warm-up's
    first LR step (the whole warm-up when it has none): up to there the two schedules are
    the same (LR, LR warm-up, labeled images), so the plateau check trains only the
    iterations where they differ, and x1 and x2 differ by the longer schedule alone, not by
    another random stream before the step. Writes ``warmup_x2/shared_prefix.json``; returns
    the iterations shared, or None when the warm-up x2 has started already or the base run
    has no checkpoint there (it then trains from scratch, as ``bench_plateau.py`` does)."""
    import shutil

    from bench_plateau import warmup_schedule

    from imagescore_det.engine.safe_load import LAST_CHECKPOINT
    from imagescore_det.utils import atomic_write, atomic_write_json, atomic_write_text

    warmup, steps, lr_warmup = warmup_schedule(list(extra), PLATEAU_CONFIG)
    shared = steps[0] if steps else warmup
    out = os.path.join(work_dir, f"seed{seed}", "warmup_x2")
    name = f"model_{shared - 1:07d}.pth"  # the periodic checkpointer's name after step shared-1
    source = os.path.join(run_dir(work_dir, seed, BASE_POOL, BASE_ARM), name)
    if os.path.exists(os.path.join(out, LAST_CHECKPOINT)) or shared <= lr_warmup \
            or not os.path.isfile(source):
        return None
    os.makedirs(out, exist_ok=True)
    with open(source, "rb") as f:
        atomic_write(os.path.join(out, name), lambda dst: shutil.copyfileobj(f, dst))
    atomic_write_json(os.path.join(out, SHARED_PREFIX),
                      {"iterations": shared, "from": os.path.relpath(source, work_dir)})
    atomic_write_text(os.path.join(out, LAST_CHECKPOINT), name)
    log(f"[seed {seed}] warm-up x2 starts from the base run's checkpoint after {shared} "
        "iterations (before the first LR step, where the schedules are the same)")
    return shared


def plateau_run(seed, work_dir, threads, extra, x2_arms=True):
    """The warm-up x2 (supervised only) of ``seed`` (sharing the base run's iterations
    before the first LR step where it has them: :func:`share_warmup_prefix`), then
    (``x2_arms``) both oracle arms continued from its end; returns its out_dir."""
    import bench_plateau

    out = os.path.join(work_dir, f"seed{seed}", "warmup_x2")
    share_warmup_prefix(seed, work_dir, extra)
    bench_plateau.train(out, 2, seed, threads, list(extra), PLATEAU_CONFIG)
    if x2_arms:
        x2_run(seed, work_dir, threads, extra)
    return out


def x2_overrides(extra=()):
    """KEY VALUE pairs of the headroom schedule with its warm-up (START_ITER, its LR steps)
    doubled as the plateau check doubles it, the continuation as long as before."""
    from bench_plateau import warmup_schedule

    from imagescore_det.engine import load_config

    warmup, steps, _ = warmup_schedule(list(extra), PLATEAU_CONFIG)
    cfg = load_config(os.path.join(ROOT, CONFIG), list(extra))
    return ["IMAGE_SCORE.START_ITER", str(2 * warmup),
            "SOLVER.MAX_ITER", str(2 * warmup + int(cfg.SOLVER.MAX_ITER) - warmup),
            "SOLVER.STEPS", str(tuple(2 * s for s in steps))]


def x2_run(seed, work_dir, threads, extra):
    """Both oracle arms (and the paired supervised copy) continued from the end of the
    seed's warm-up x2: its final checkpoint becomes the round checkpoint of a branch."""
    import shutil

    from imagescore_det.engine.paired import ROUND_CHECKPOINT, branch_from_round
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT
    from imagescore_det.utils import atomic_write, atomic_write_text

    source = os.path.join(work_dir, f"seed{seed}", "warmup_x2", "model_final.pth")
    base = run_dir(work_dir, seed, X2, BASE_ARM)
    if not os.path.exists(os.path.join(base, LAST_CHECKPOINT)):
        os.makedirs(base, exist_ok=True)
        with open(source, "rb") as f:
            atomic_write(os.path.join(base, ROUND_CHECKPOINT + ".pth"),
                         lambda out: shutil.copyfileobj(f, out))
        atomic_write_text(os.path.join(base, LAST_CHECKPOINT), ROUND_CHECKPOINT + ".pth")
    schedule = x2_overrides(extra)
    train(base, CONFIG, arm_overrides(seed, BASE_POOL, BASE_ARM, base, [*schedule, *extra]),
          True, threads)
    for arm in ARMS:
        if arm == BASE_ARM:
            continue
        out = run_dir(work_dir, seed, X2, arm)
        if not os.path.exists(os.path.join(out, LAST_CHECKPOINT)):
            branch_from_round(base, out)
        train(out, CONFIG, arm_overrides(seed, BASE_POOL, arm, out, [*schedule, *extra]), True,
              threads)


# --------------------------------------------------------------------------- measuring
def measure_seed(seed, pools, work_dir, with_plateau, extra=()):
    """{"seed", "warmup_ap50", "warmup_x2_ap50", "supervised_ap50", pool: {arm: {...}}}."""
    import json

    from bench_plateau import curve, warmup_schedule
    from bench_quality import versus

    from imagescore_det.engine.paired import PAIRED_DIR
    from imagescore_det.evaluation import ap50_of

    base_dir = run_dir(work_dir, seed, BASE_POOL, BASE_ARM)
    with open(os.path.join(base_dir, "report.json")) as f:
        base = json.load(f)
    none_dir = os.path.join(base_dir, PAIRED_DIR)
    row = {"seed": seed, "warmup_ap50": ap50_of(base["eval_before"]),
           "supervised_ap50": base["paired_baseline"]["summary"]["AP50_supervised_only"]}
    if with_plateau:
        warmup = warmup_schedule(list(extra), PLATEAU_CONFIG)[0]
        points = dict(curve(os.path.join(work_dir, f"seed{seed}", "warmup_x2", "metrics.json"),
                            2 * warmup))
        row["warmup_x2_ap50"] = points.get(2 * warmup)
        shared = os.path.join(work_dir, f"seed{seed}", "warmup_x2", SHARED_PREFIX)
        if os.path.isfile(shared):
            with open(shared) as f:
                row["warmup_x2_shared_iterations"] = json.load(f)["iterations"]
        row["warmup_x2_curve"] = sorted(points.items())
    x2_base = run_dir(work_dir, seed, X2, BASE_ARM)
    if with_plateau and os.path.isfile(os.path.join(x2_base, "report.json")):
        with open(os.path.join(x2_base, "report.json")) as f:
            x2 = json.load(f)
        row["x2_supervised_ap50"] = x2["paired_baseline"]["summary"]["AP50_supervised_only"]
        pools = list(pools) + [X2]
    for pool in pools:
        row[pool] = {}
        for arm in ARMS:
            d = run_dir(work_dir, seed, pool, arm)
            with open(os.path.join(d, "report.json")) as f:
                report = json.load(f)
            # versus(a, b): b minus a, with its paired bootstrap interval
            v = versus(os.path.join(x2_base, PAIRED_DIR) if pool == X2 else none_dir, d)
            sup = row["x2_supervised_ap50"] if pool == X2 else row["supervised_ap50"]
            check_gain(ap50_of(report["eval_after"]) - sup, v["AP50_difference"], d)
            row[pool][arm] = {"ap50": ap50_of(report["eval_after"]),
                              "pseudo_images": report["rounds"][0]["num_pseudo_images"],
                              "gain": v["AP50_difference"], "gain_ci95": v["AP50_ci95"],
                              "p_value": v["p_value"], "test_images": v["test_images"],
                              "dir": os.path.relpath(d, ROOT)}
    return row


def check_gain(evaluated, bootstrapped, run, tolerance=1.0):
    """The paired bootstrap's AP50 difference (from the saved detections) must agree with the
    evaluators' AP50s (arm minus supervised): a swapped order or a wrong baseline folder
    shows here."""
    if abs(evaluated - bootstrapped) > tolerance:
        raise RuntimeError(
            f"{run}: the bootstrap's AP50 difference {bootstrapped:+.2f} disagrees with the "
            f"evaluated arm minus supervised {evaluated:+.2f}; the detections compared are not "
            "this arm's and its paired supervised copy's. Delete the run folder and rerun.")


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def aggregate(per_seed, pools):
    """Mean/std/range over seeds per pool and arm, the plateau gain, and the bar: the
    whole-pool oracle's mean gain >= BAR_GAIN with every seed's interval above 0."""
    out = {"warmup_ap50": stats([r["warmup_ap50"] for r in per_seed]),
           "supervised_ap50": stats([r["supervised_ap50"] for r in per_seed]),
           "supervised_gain_over_warmup": stats(
               [r["supervised_ap50"] - r["warmup_ap50"] for r in per_seed]),
           "warmup_x2_gain": stats([r["warmup_x2_ap50"] - r["warmup_ap50"] for r in per_seed
                                    if r.get("warmup_x2_ap50") is not None])}
    if any(X2 in r for r in per_seed):
        pools = list(pools) + [X2]
        out["x2_supervised_ap50"] = stats([r.get("x2_supervised_ap50") for r in per_seed])
    for pool in pools:
        out[pool] = {}
        for arm in ARMS:
            rows = [r[pool][arm] for r in per_seed if pool in r]
            out[pool][arm] = {
                "ap50": stats([x["ap50"] for x in rows]),
                "gain": stats([x["gain"] for x in rows]),
                "seeds_ci_above_0": sum(x["gain_ci95"][0] > 0 for x in rows),
                "seeds": len(rows)}
        whole = out[pool]["oracle_all"]
        out[pool]["bar_met"] = bool(
            whole["gain"] is not None and whole["gain"]["mean"] >= BAR_GAIN
            and whole["seeds_ci_above_0"] == whole["seeds"])
    return out


# --------------------------------------------------------------------------- reporting
def _ci(x):
    return f"{x['gain']:+.2f} [{x['gain_ci95'][0]:+.2f}, {x['gain_ci95'][1]:+.2f}]"


def _ms(s, digits=1, signed=False):
    if not s:
        return "-"
    sign = "+" if signed else ""
    return (f"{s['mean']:{sign}.{digits}f} ± {s['std']:.{digits}f} "
            f"({s['min']:{sign}.{digits}f} to {s['max']:{sign}.{digits}f})")


def shown_pools(result):
    """The pool variants run, then the arms from the warm-up x2 where any seed has them."""
    return list(result["pools"]) + ([X2] if X2 in result["mean_over_seeds"] else [])


def _shared_text(result):
    shared = sorted({r["warmup_x2_shared_iterations"] for r in result["per_seed"]
                     if r.get("warmup_x2_shared_iterations")})
    if not shared:
        return ""
    return (f" (the warm-up x2 continues the warm-up's own run after its first "
            f"{'/'.join(map(str, shared))} iterations, before the first LR step, where the "
            "schedules are the same)")


def _cell(r, pool, arm):
    return f"{r[pool][arm]['ap50']:.2f}: {_ci(r[pool][arm])}" if pool in r else "-"


def markdown(result):
    agg = result["mean_over_seeds"]
    seeds = result["seeds"]
    pools = shown_pools(result)
    lines = [f"# bench_headroom: room for a selector to help ({len(seeds)} seed(s): "
             f"{', '.join(map(str, seeds))})", "",
             f"Command: `{result['command']}` at commit {result['commit']}  ",
             f"Config: `{result['config']}` (warm-up {result['warmup_iterations']} iterations "
             f"on the 40 labeled images, continuation {result['continuation_iterations']}; "
             f"overrides: {' '.join(result['overrides']) or 'none'}); machine: "
             f"{result['machine']}; wall time {result['wall_seconds'] / 60:.0f} min.", "",
             "Test AP50 (200 test images). `supervised`: the paired supervised-only "
             "continuation from the same round checkpoint (same iterations and random "
             "stream). Gain: arm minus supervised, with the 95% paired bootstrap interval over "
             "the test images. Mean ± std (range) over seeds.", "",
             f"* warm-up (the round's detector): {_ms(agg['warmup_ap50'])}",
             f"* warm-up x2 minus warm-up (plateau check, bar ~2): "
             f"{_ms(agg['warmup_x2_gain'], signed=True)}" + _shared_text(result),
             f"* supervised continuation: {_ms(agg['supervised_ap50'])} "
             f"(minus warm-up: {_ms(agg['supervised_gain_over_warmup'], signed=True)})"] + (
                 [f"* supervised continuation from the warm-up x2: "
                  f"{_ms(agg['x2_supervised_ap50'])}"] if X2 in agg else []) + ["",
             "| pool | arm | images added | AP50 | gain over supervised | seeds with interval "
             "above 0 |", "| --- | --- | --- | --- | --- | --- |"]
    for pool in pools:
        for arm in ARMS:
            a = agg[pool][arm]
            images = sorted({r[pool][arm]["pseudo_images"] for r in result["per_seed"]
                             if pool in r})
            lines.append(f"| {pool} | {arm} | {'/'.join(map(str, images))} | {_ms(a['ap50'])} | "
                         f"{_ms(a['gain'], 1, True)} | {a['seeds_ci_above_0']}/{a['seeds']} |")
    lines += ["", "Bar (whole-pool oracle at least +10 AP50 over supervised, every seed's "
              "interval above 0): " + "; ".join(
                  f"{pool} pool {'met' if agg[pool]['bar_met'] else 'NOT met'}"
                  for pool in pools) + ".", "",
              "Per seed (gain [95% CI]):", "",
              "| seed | warm-up | warm-up x2 | supervised | " + " | ".join(
                  f"{pool} {arm}" for pool in pools for arm in ARMS) + " |",
              "| --- " * (4 + len(pools) * len(ARMS)) + "|"]
    for r in result["per_seed"]:
        x2 = r.get("warmup_x2_ap50")
        lines.append(f"| {r['seed']} | {r['warmup_ap50']:.2f} | "
                     f"{'-' if x2 is None else f'{x2:.2f}'} | {r['supervised_ap50']:.2f} | "
                     + " | ".join(_cell(r, pool, arm) for pool in pools for arm in ARMS) + " |")
    lines += ["", "Arms:", ""] + [f"* `{k}`: {v[0]}" for k, v in ARMS.items()] + \
        [f"* pool `{k}`: {POOLS[k][0] if k in POOLS else X2_WHAT}" for k in pools]
    return "\n".join(lines) + "\n"


def plot(path, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = []
    colors = {"same": "#9ecae1", "shifted": "#fdae6b", X2: "#a1d99b"}
    for i, (pool, arm) in enumerate((p, a) for p in shown_pools(result) for a in ARMS):
        rows = [r[pool][arm] for r in result["per_seed"] if pool in r]
        gains = [x["gain"] for x in rows]
        ax.bar(i, np.mean(gains), color=colors[pool])
        for j, x in enumerate(rows):
            xo = i + (j - (len(rows) - 1) / 2) * 0.12
            ax.errorbar(xo, x["gain"], yerr=[[x["gain"] - x["gain_ci95"][0]],
                                             [x["gain_ci95"][1] - x["gain"]]],
                        fmt="o", color="k", ms=3, capsize=2)
        labels.append(f"{pool}\n{arm}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(BAR_GAIN, color="red", lw=0.8, ls="--", label=f"bar (+{BAR_GAIN:g})")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("test AP50 minus paired supervised")
    ax.set_title(f"bench_headroom, seeds {result['seeds']} (bars: mean; dots: seeds, 95% CI)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    from imagescore_det.data import generate_headroom_datasets
    from imagescore_det.engine import load_config

    args.root = os.path.abspath(args.root)
    os.environ["DETECTRON2_DATASETS"] = args.root
    generate_headroom_datasets(args.root)
    work_dir = os.path.abspath(args.work_dir)
    threads = threads_per_run(args)
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as executor:
        # base runs first (the long ones), branches as soon as their base ends; the
        # plateau runs (supervised, longest) after the seeds' base runs
        seeds = [executor.submit(run_seed, s, args.pools, work_dir, threads, args.opts,
                                 executor) for s in args.seeds]
        plateaus = [executor.submit(plateau_run, s, work_dir, threads, args.opts,
                                    not args.no_x2_arms) for s in args.plateau_seeds]
        branches = [f for s in seeds for f in s.result()]
        for f in branches + plateaus:
            f.result()
    per_seed = [measure_seed(s, args.pools, work_dir, s in args.plateau_seeds, args.opts)
                for s in args.seeds]
    cfg = load_config(os.path.join(ROOT, CONFIG), list(args.opts))
    result = {
        "benchmark": "headroom", "commit": git_commit(), "seeds": args.seeds,
        "pools": args.pools,
        "plateau_seeds": args.plateau_seeds,
        "config": CONFIG, "overrides": args.opts,
        "warmup_iterations": int(cfg.IMAGE_SCORE.START_ITER),
        "continuation_iterations": int(cfg.SOLVER.MAX_ITER - cfg.IMAGE_SCORE.START_ITER),
        "root": os.path.relpath(args.root, ROOT), "work_dir": os.path.relpath(work_dir, ROOT),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.jobs} runs at a "
                   f"time ({threads} thread(s) each)",
        "wall_seconds": time.time() - started,
        "command": " ".join(["benchmarks/bench_headroom.py"] + (
            argv if argv is not None else sys.argv[1:])),
        "arms": {k: {"what": v[0], "overrides": v[1]} for k, v in ARMS.items()},
        "pool_variants": {k: {"what": POOLS[k][0], "overrides": POOLS[k][1]}
                          for k in args.pools},
        "mean_over_seeds": aggregate(per_seed, args.pools),
        "per_seed": per_seed,
    }
    write_results(args.output, result, plot, markdown)


if __name__ == "__main__":
    main()
