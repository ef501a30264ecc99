#!/usr/bin/env python
"""Is the quickstart's warm-up at its plateau when the round selects? Measured.

The paper selects with a detector trained to convergence on the labeled set. This trains the
quickstart's warm-up (``configs/synthetic/imagescore_V16tiny_quick.yaml``, or ``--config``, up to
``IMAGE_SCORE.START_ITER``, its LR steps included, no pseudo-labels) and the same schedule
stretched to twice as long (every iteration key x2), per seed, evaluating test AP50 along
the way. The warm-up is at its plateau when doubling it gains little: the issue's bar is
AP50 within ~2 points.

    .venv/bin/python benchmarks/bench_plateau.py                 # seeds 0 1 2
    .venv/bin/python benchmarks/bench_plateau.py --seeds 0 --scales 1 2 4
    .venv/bin/python benchmarks/bench_plateau.py --seeds 0 --opts MODEL.VGG.NORM BN \
        --work-dir output/bench_plateau_bn --output /tmp/plateau_bn.json
    .venv/bin/python benchmarks/bench_plateau.py --config \
        configs/synthetic/imagescore_V16tiny_headroom.yaml --work-dir output/plateau_headroom

``--root`` is the datasets root holding ``synthetic_voc/`` and the headroom protocol's
``synthetic_headroom*/`` (generated if absent). Writes
``--output`` (JSON) and, beside it, the learning curves (``.png``) and ``.md``. Finished
runs are reused, so an interrupted benchmark resumes; ``--jobs`` runs at a time.
"""
import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from _bench_cli import (  # noqa: E402 (benchmarks/, beside this file)
    add_threads_argument, recorded_path, save_figure, threads_per_run, write_results)
CONFIG = os.path.join("configs", "synthetic", "imagescore_V16tiny_quick.yaml")


def warmup_schedule(extra=(), config=CONFIG):
    """(warm-up iterations, LR steps inside it, LR warm-up) of ``config`` (default the
    quickstart's) with the ``extra`` KEY VALUE overrides."""
    from imagescore_det.engine import load_config

    cfg = load_config(os.path.join(ROOT, config), list(extra))
    warmup = int(cfg.IMAGE_SCORE.START_ITER)
    steps = [int(s) for s in cfg.SOLVER.STEPS if s < warmup]
    return warmup, steps, int(cfg.SOLVER.WARMUP_ITERS)


def overrides(out_dir, scale, seed, extra=(), config=CONFIG):
    """train_net.py KEY VALUE pairs of ``config``'s warm-up stretched ``scale`` times,
    supervised only, after the ``extra`` ones (``--opts``: another model or data setting to
    measure)."""
    warmup, steps, lr_warmup = warmup_schedule(extra, config)
    return list(extra) + [
        "IMAGE_SCORE.ENABLED", "False", "IMAGE_SCORE.PAIRED_BASELINE", "False",
        "SEED", str(seed),
        "SOLVER.MAX_ITER", str(warmup * scale),
        "SOLVER.STEPS", str(tuple(s * scale for s in steps)),
        "SOLVER.WARMUP_ITERS", str(lr_warmup),
        "TEST.EVAL_PERIOD", str(max(1, warmup // 6)),
        "SOLVER.CHECKPOINT_PERIOD", str(max(1, warmup // 6)), "OUTPUT_DIR", out_dir]


def train(out_dir, scale, seed, threads, extra=(), config=CONFIG):
    warmup, _, _ = warmup_schedule(extra, config)
    metrics = os.path.join(out_dir, "metrics.json")
    final = os.path.join(out_dir, "model_final.pth")
    if not os.path.isfile(final):
        resume = os.path.isfile(os.path.join(out_dir, "last_checkpoint"))
        cmd = [sys.executable, "tools/train_net.py", "--config-file", config] + (
            ["--resume"] if resume else []) + overrides(out_dir, scale, seed, extra, config)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        print(f"[{os.path.relpath(out_dir, ROOT)}] {' '.join(cmd[1:])}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        started = time.time()
        with open(out_dir + ".log", "a") as f:
            done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed; see {out_dir}.log. Rerun to resume.")
        print(f"[{os.path.relpath(out_dir, ROOT)}] done in {time.time() - started:.0f} s",
              flush=True)
    return curve(metrics, warmup * scale), seconds_per_iteration(metrics)


def seconds_per_iteration(metrics_path):
    """Median training step time of a run (Detectron2 logs ``time`` every 20 iterations;
    evaluation and checkpointing are not in it)."""
    with open(metrics_path) as f:
        times = [row["time"] for row in map(json.loads, f) if "time" in row]
    return median_or_none(times)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def curve(metrics_path, max_iter):
    """[(iterations trained, AP50)] from a run's metrics.json (one JSON object per line): a
    periodic evaluation is logged at the last iteration it follows (249 for 250 trained),
    the final one at MAX_ITER."""
    points = {}
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if "bbox/AP50" in row:
                it = int(row["iteration"])
                points[it if it >= max_iter else it + 1] = float(row["bbox/AP50"])
    return sorted(points.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS",
                                                    os.path.join(ROOT, "datasets")),
                   help="datasets root holding synthetic_voc/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2],
                   help="schedule lengths, in warm-ups (default 1 2)")
    p.add_argument("--jobs", type=int, default=2)
    add_threads_argument(p)
    p.add_argument("--config", default=CONFIG,
                   help="the config whose warm-up (up to IMAGE_SCORE.START_ITER) is measured, "
                        "relative to the repository (default: the quickstart's; e.g. "
                        "configs/synthetic/imagescore_V16tiny_headroom.yaml, whose datasets "
                        "bench_headroom.py generates)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for every run, e.g. MODEL.VGG.NORM BN (use another "
                        "--work-dir: finished runs are reused)")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "bench_plateau"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_plateau.json"))
    args = p.parse_args(argv)
    from imagescore_det.data import generate_headroom_datasets, generate_synthetic_voc

    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.root)
    generate_synthetic_voc(os.path.join(os.environ["DETECTRON2_DATASETS"], "synthetic_voc"))
    generate_headroom_datasets(os.environ["DETECTRON2_DATASETS"])
    warmup, steps, _ = warmup_schedule(args.opts, args.config)
    threads = threads_per_run(args)
    started = time.time()
    work = os.path.abspath(args.work_dir)
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        # longest first, so the two cores stay busy to the end
        jobs = {(s, m): pool.submit(train, os.path.join(work, f"seed{s}", f"x{m}"), m, s, threads,
                                       args.opts, args.config)
                for m in sorted(args.scales, reverse=True) for s in args.seeds}
        done = {key: f.result() for key, f in jobs.items()}
    per_seed, summary = aggregate(done, warmup, args.scales, args.seeds)
    result = {"benchmark": "plateau", "config": args.config, "overrides": args.opts,
              "warmup_iterations": warmup,
              "lr_steps": steps, "seeds": args.seeds, "scales": args.scales,
              "root": recorded_path(os.environ["DETECTRON2_DATASETS"]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.jobs} runs "
                         f"at a time ({threads} thread(s) each)",
              "wall_seconds": time.time() - started,
              "command": " ".join(["benchmarks/bench_plateau.py"] + (
                  argv if argv is not None else sys.argv[1:])),
              "summary": summary, "per_seed": per_seed}
    write_results(args.output, result, plot, markdown)


def aggregate(done, warmup, scales, seeds):
    """(per_seed, summary) of the runs ``done``: ``{(seed, scale): (curve, seconds per
    iteration)}``, a curve being ``[(iteration, AP50), ...]``. Each scale's end AP50 is the
    curve's point at ``warmup * scale``; its gain is over the smallest scale's, same seed
    (key ``gain_over_x<smallest scale>``)."""
    lo = min(scales)
    gain_key = f"gain_over_x{lo}"
    per_seed = []
    for s in seeds:
        row = {"seed": s}
        for m in scales:
            curve, seconds = done[(s, m)]
            row[f"x{m}"] = {"ap50_end": dict(curve).get(warmup * m), "curve": curve,
                            "seconds_per_iteration": seconds}
        base = row[f"x{lo}"]["ap50_end"]
        for m in scales:
            end = row[f"x{m}"]["ap50_end"]
            row[f"x{m}"][gain_key] = None if end is None or base is None else end - base
        per_seed.append(row)
    summary = {}
    for m in scales:
        ends = [r[f"x{m}"]["ap50_end"] for r in per_seed if r[f"x{m}"]["ap50_end"] is not None]
        gains = [r[f"x{m}"][gain_key] for r in per_seed if r[f"x{m}"][gain_key] is not None]
        summary[f"x{m}"] = {"iterations": warmup * m,
                            "ap50_end_mean": float(np.mean(ends)) if ends else None,
                            "ap50_end_std": float(np.std(ends, ddof=1)) if len(ends) > 1 else 0.0,
                            "gain_mean": float(np.mean(gains)) if gains else None,
                            "gain_min": float(min(gains)) if gains else None,
                            "gain_max": float(max(gains)) if gains else None,
                            "seconds_per_iteration_median": median_or_none(
                                [done[(s, m)][1] for s in seeds])}
    return per_seed, summary


def markdown(result):
    lo = min(result["scales"])
    lines = [f"# bench_plateau: is the warm-up of `{result.get('config', CONFIG)}` "
             f"({result['warmup_iterations']} "
             f"iterations, LR steps {result['lr_steps']}) at its plateau?", "",
             f"Command: `{result['command']}`; machine: {result['machine']}; wall time "
             f"{result['wall_seconds'] / 60:.0f} min.", "",
             f"| schedule | iterations | test AP50 at its end (mean ± std) | gain over x{lo} "
             "(mean, range over seeds) | s/iteration (median) |",
             "| --- | --- | --- | --- | --- |"]
    for m in result["scales"]:
        s = result["summary"][f"x{m}"]
        end = "-" if s["ap50_end_mean"] is None else \
            f"{s['ap50_end_mean']:.1f} ± {s['ap50_end_std']:.1f}"
        gain = "-" if s["gain_mean"] is None else \
            f"{s['gain_mean']:+.1f} ({s['gain_min']:+.1f} to {s['gain_max']:+.1f})"
        sec = s.get("seconds_per_iteration_median")
        sec = "-" if sec is None else f"{sec:.3f}"
        lines.append(f"| x{m} | {s['iterations']} | {end} | {gain} | {sec} |")
    if result.get("overrides"):
        lines += ["", "Overrides on top of the config: `"
                  + " ".join(result["overrides"]) + "`."]
    top = result["summary"][f"x{max(result['scales'])}"]
    if top["gain_mean"] is not None and len(result["scales"]) > 1:
        met = top["gain_max"] <= 2.0
        lines += ["", f"Verdict: a warm-up x{max(result['scales'])} as long adds "
                  f"{top['gain_mean']:+.1f} AP50 on average: the x{lo} warm-up "
                  + ("is at its plateau by the ~2-point bar." if met else
                     "is *not* at its plateau by the ~2-point bar (it selects with a detector "
                     f"{top['gain_mean']:.1f} AP50 short of the longer schedule's).")]
    lines += ["", "Per seed (AP50 at the end of each schedule):", ""]
    for r in result["per_seed"]:
        lines.append(f"* seed {r['seed']}: " + ", ".join(
            f"x{m} {r[f'x{m}']['ap50_end']:.1f}" for m in result["scales"]
            if r[f"x{m}"]["ap50_end"] is not None))
    return "\n".join(lines) + "\n"


def plot(path, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(result["per_seed"]):
        for m, style in zip(result["scales"], ("-", "--", ":", "-.")):
            pts = r[f"x{m}"]["curve"]
            if pts:
                ax.plot(*zip(*pts), style, color=colors[i % len(colors)], marker=".",
                        label=f"seed {r['seed']}, x{m}")
    ax.axvline(result["warmup_iterations"], color="grey", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("test AP50")
    ax.set_title("supervised warm-up: the quickstart's schedule (x1) and stretched", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
