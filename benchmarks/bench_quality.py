#!/usr/bin/env python
"""Does Image Score pick better pseudo-labels, and does training on them help? Measured.

On the synthetic dataset (its pool truth and domains are known), in the quickstart's regime
(``configs/synthetic/imagescore_V16tiny_quick.yaml``: a warm-up to the plateau, then a
continuation of 1/6), for every seed:

1. one full run with ``image_score`` and ``IMAGE_SCORE.PAIRED_BASELINE True``: the warm-up,
   the round, the continuation with pseudo-labels, and the supervised-only copy from the
   round checkpoint (the ``none`` row: training longer on the labeled set only);
2. every other selector and variant *branches* from that run's round checkpoint
   (``engine.paired.branch_from_round``): the same detector selects, the same iterations
   follow with the same random stream; only the selection differs.

Per variant and seed, from the round folder and report.json:

* pseudo-box precision and recall of the images trained on (IoU 0.5, against the truth);
* AUROC of the variant's score for "this pool image's pseudo-boxes are all correct", over
  every pool image the round's detector gives at least one box at BOX_SCORE_THRESH (the
  detection analogue of the paper's Figure 2), with a bootstrap interval. With
  ``IMAGE_SCORE.ANALYZE_POOL`` each round writes, per pool image, how many of its would-be
  pseudo-boxes are right and wrong (scores.csv's ``pool_*`` columns); every variant of a
  seed selects with the same detector, so they are the same in every variant;
* the same per pseudo-box (``pool_boxes.csv``): AUROC of the variant's score for "this box is
  correct", the image's score for image-level selectors, the box's own confidence for
  ``softmax`` (``auroc_box``; the detector's box confidence for every variant beside it,
  ``auroc_box_confidence``), with a bootstrap over images; the per-image AUROC stratified by
  the image's pseudo-box count (``auroc_stratified``: only pairs of images with as many
  boxes, since the all-correct share falls with the count); each also per domain
  (``_typical`` / ``_shifted`` suffixes) when the pool has domains;
* the shifted domain's share of the selection (and of the pool);
* test AP50 before the round, at the end, and the paired bootstrap of the end against the
  ``none`` run of the same seed (difference, 95% interval, one-sided p).

Then mean, standard deviation and range over the seeds. Variants that need a selector or
key this checkout lacks are skipped with a note.

    .venv/bin/python benchmarks/bench_quality.py                          # 3 seeds, all
    .venv/bin/python benchmarks/bench_quality.py --seeds 0 --variants image_score softmax

``--root`` is the datasets root holding ``synthetic_voc/`` (generated there if absent).
Writes ``--output`` (JSON) and, beside it, ``.png`` and ``.md``; prints the table. Finished
runs are reused (their report.json), so an interrupted benchmark resumes where it stopped.
Runs go ``--jobs`` at a time (default 2 on this 2-core machine, one thread each).
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from _bench_cli import recorded_path, save_figure, write_results  # noqa: E402 (benchmarks/, beside this file)

CONFIG = os.path.join("configs", "synthetic", "imagescore_V16tiny_quick.yaml")
BASE = "image_score"
NONE = "none"

# name -> (what it is, KEY VALUE overrides on top of the quickstart config)
VARIANTS = {
    "image_score": ("the method as the quickstart runs it: IoU, every conv layer, GRID 8x8", []),
    "softmax": ("the paper's softmax baseline: mean confidence of the kept boxes",
                ["IMAGE_SCORE.SELECTOR", "softmax"]),
    "random": ("uniformly random images", ["IMAGE_SCORE.SELECTOR", "random"]),
    "is_recall": ("image score, similarity recall |A&B|/|B|", ["IMAGE_SCORE.SIMILARITY", "recall"]),
    "is_precision": ("image score, similarity precision |A&B|/|A|",
                     ["IMAGE_SCORE.SIMILARITY", "precision"]),
    "is_grid16": ("image score, GRID 16x16 (the library default)", ["IMAGE_SCORE.GRID", "(16, 16)"]),
    "is_grid32": ("image score, GRID 32x32 (finer)", ["IMAGE_SCORE.GRID", "(32, 32)"]),
    "is_resize": ("image score on images resized to 144x144, maps not pooled",
                  ["IMAGE_SCORE.SCORE_RESIZE", "(144, 144)", "IMAGE_SCORE.GRID", "()"]),
    "is_deepest": ("image score, the deepest block only (conv5_1-3)",
                   ["IMAGE_SCORE.LAYERS", "['conv5_\\d']"]),
    "is_per_class": ("image score, per-class masks over the predicted classes",
                     ["IMAGE_SCORE.SELECTOR", "image_score_per_class"]),
    "hybrid": ("confidence filter, then image-score rank", ["IMAGE_SCORE.SELECTOR", "hybrid"]),
    "oracle": ("random's images labeled with the pool's ground truth (the upper bound at the "
               "selectors' image count)", ["IMAGE_SCORE.SELECTOR", "oracle"]),
    "oracle_all": ("the whole pool labeled with its ground truth (oracle, TOP_FRACTION 1.0)",
                   ["IMAGE_SCORE.SELECTOR", "oracle", "IMAGE_SCORE.TOP_FRACTION", "1.0"]),
}
_print_lock = threading.Lock()


def log(msg):
    with _print_lock:
        print(msg, flush=True)


def available(name):
    """None when this checkout can run the variant, else why not."""
    from imagescore_det.config import add_imagescore_config
    from imagescore_det.engine.selectors import config_selector_names
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_imagescore_config(cfg)
    opts = VARIANTS[name][1]
    for key, value in zip(opts[::2], opts[1::2]):
        if not hasattr(cfg.IMAGE_SCORE, key.split(".", 1)[1]):
            return f"this checkout has no {key}"
        if key == "IMAGE_SCORE.SELECTOR" and value not in config_selector_names():
            return f"this checkout has no selector {value!r}"
    return None


# --------------------------------------------------------------------------- running
def train(out_dir, opts, seed, resume, threads, extra):
    report = os.path.join(out_dir, "report.json")
    if os.path.isfile(report):
        log(f"[{os.path.relpath(out_dir)}] finished before; reused")
        return report
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
           os.path.join(ROOT, CONFIG)] + (["--resume"] if resume else []) + [
        "SEED", str(seed), "IMAGE_SCORE.ANALYZE_POOL", "True", "OUTPUT_DIR", out_dir,
        *opts, *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.time()
    log(f"[{os.path.relpath(out_dir)}] started: {' '.join(cmd[1:])}")
    with open(out_dir.rstrip("/") + ".log", "a") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}); see "
                           f"{out_dir}.log. Rerun the benchmark to resume.")
    log(f"[{os.path.relpath(out_dir)}] done in {time.time() - started:.0f} s")
    return report


def run_seed(seed, variants, work_dir, threads, extra, pool):
    """The base run of ``seed``, then its branches (submitted to ``pool``)."""
    from imagescore_det.engine.paired import branch_from_round
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT

    base_dir = os.path.join(work_dir, f"seed{seed}", BASE)
    os.makedirs(os.path.dirname(base_dir), exist_ok=True)
    resume = os.path.isfile(os.path.join(base_dir, LAST_CHECKPOINT))
    train(base_dir, ["IMAGE_SCORE.PAIRED_BASELINE", "True"], seed, resume, threads, extra)
    futures = []
    for name in variants:
        if name == BASE:
            continue
        out = os.path.join(work_dir, f"seed{seed}", name)
        if not os.path.exists(os.path.join(out, LAST_CHECKPOINT)):
            branch_from_round(base_dir, out)
        futures.append(pool.submit(train, out, VARIANTS[name][1] + [
            "IMAGE_SCORE.PAIRED_BASELINE", "False"], seed, True, threads, extra))
    return futures


# --------------------------------------------------------------------------- measuring
def measure(run_dir, none_dir):
    """One variant's numbers for one seed."""
    import json

    from imagescore_det.engine.round_files import (
        POOL_BOXES_CSV, POOL_QUALITY_COLUMNS, SCORES_CSV, read_pool_boxes_csv, read_scores_csv,
        round_dir)
    from imagescore_det.evaluation import ap50_of
    from imagescore_det.evaluation.auroc import auroc_interval

    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    row = {"ap50_before": ap50_of(report["eval_before"]),
           "ap50_after": ap50_of(report["eval_after"])}
    r = report["rounds"][0]
    row.update(precision=r.get("pseudo_precision"), recall=r.get("pseudo_recall"),
               pseudo_images=r["num_pseudo_images"], pseudo_boxes=r["num_pseudo_boxes"],
               selection_seconds=r["timing"].get("selection_total_s"))
    row.update(shifted_shares(r))
    # AUROC over the whole pool: every image the detector gives at least one pseudo-box,
    # positive when none of them is wrong, ranked by this variant's score. The round wrote
    # each pool image's would-be pseudo-labels against its truth (IMAGE_SCORE.ANALYZE_POOL)
    scores_path = os.path.join(round_dir(run_dir, 1), SCORES_CSV)
    pool = read_scores_csv(scores_path)
    if pool and not set(POOL_QUALITY_COLUMNS) <= set(pool[0]):
        raise RuntimeError(f"{scores_path} has no {POOL_QUALITY_COLUMNS} columns: the run was "
                           "made by an older imagescore-det. Delete its folder (or pass "
                           "another --work-dir) and rerun the benchmark.")
    tp_col, fp_col = POOL_QUALITY_COLUMNS[:2]
    judged = [(x["score"], int(x[fp_col]) == 0) for x in pool
              if int(x[tp_col]) + int(x[fp_col]) > 0]
    if judged:
        scores = np.array([j[0] for j in judged])
        correct = np.array([j[1] for j in judged])
        a = auroc_interval(scores, correct, resamples=500)
        row.update(auroc=a["auroc"], auroc_ci95=a["ci"], auroc_images=len(judged),
                   share_correct_images=float(correct.mean()))
    boxes_path = os.path.join(round_dir(run_dir, 1), POOL_BOXES_CSV)
    if os.path.isfile(boxes_path):  # runs of older imagescore-det have no per-box file
        row.update(correctness_aurocs(pool, read_pool_boxes_csv(boxes_path),
                                      own_confidence=r["selector"] == "softmax"))
    # the pool's precision by score decile (the same pseudo-labelling rule on every image)
    row["pool_precision_by_score_bin"] = r.get("pool_precision_by_score_bin")
    if none_dir is not None:
        row["vs_none"] = versus(none_dir, run_dir)
    return row


def correctness_aurocs(pool, boxes, own_confidence, resamples=500):
    """Per-box and stratified AUROCs of "the pseudo-label is correct", overall and per domain.

    ``pool``: scores.csv rows (pool order; ``score``, ``domain`` when known); ``boxes``:
    pool_boxes.csv rows. Per image: every image with a pseudo-box, positive when none is
    wrong; ``auroc_stratified`` counts only pairs of images with the same number of boxes.
    Per box: positive when correct, scored by its image's score, or by its own confidence
    when ``own_confidence`` (softmax); ``auroc_box_confidence`` is the box confidence for
    every variant. Intervals resample images (a box goes with its image's other boxes).
    """
    from imagescore_det.evaluation.auroc import auroc, auroc_interval, stratified_auroc

    score = np.array([r["score"] for r in pool], dtype=np.float64)
    domains = [r.get("domain") for r in pool]
    index = np.array([b["pool_index"] for b in boxes], dtype=np.int64)
    correct = np.array([b["correct"] for b in boxes], dtype=bool)
    confidence = np.array([b["confidence"] for b in boxes], dtype=np.float64)
    count = np.bincount(index, minlength=len(pool))
    wrong = np.bincount(index, weights=~correct, minlength=len(pool))
    out = {}
    scopes = {"": None}
    if all(domains):
        scopes.update({f"_{d}": d for d in sorted(set(domains))})
    for suffix, domain in scopes.items():
        images = np.array([i for i in range(len(pool)) if count[i] and (
            domain is None or domains[i] == domain)], dtype=np.int64)
        in_scope = np.isin(index, images)
        if not len(images):
            continue
        all_correct = wrong[images] == 0
        stratified = auroc_interval(
            score[images], all_correct, resamples, statistic=lambda i: stratified_auroc(
                score[images][i], all_correct[i], count[images][i]))
        box_score = (confidence if own_confidence else score[index])[in_scope]
        per_box = auroc_interval(box_score, correct[in_scope], resamples,
                                 groups=index[in_scope])
        out.update({
            f"auroc_images{suffix}": int(len(images)),
            f"auroc_stratified{suffix}": stratified["auroc"],
            f"auroc_stratified{suffix}_ci95": stratified["ci"],
            f"auroc_box{suffix}": per_box["auroc"], f"auroc_box{suffix}_ci95": per_box["ci"],
            f"auroc_box_confidence{suffix}": auroc(confidence[in_scope], correct[in_scope]),
            f"boxes_judged{suffix}": int(in_scope.sum()),
            f"share_correct_boxes{suffix}": float(correct[in_scope].mean())})
        if suffix:  # the per-image AUROC per domain (overall: measure's "auroc")
            out[f"auroc{suffix}"] = auroc(score[images], all_correct)
    return out


def shifted_shares(round_entry):
    """The shifted domain's share of the images trained on and of the pool, from a round's
    ``domains`` (``{}`` without domains). A domain's ``selected`` counts the images trained
    on (selected or back-filled, with at least MIN_BOXES_PER_IMAGE pseudo-boxes), which is
    not ``num_selected`` when back-fill is off or runs out: the share divides by their sum."""
    doms = round_entry.get("domains")
    if not doms:
        return {}
    trained = sum(d["selected"] for d in doms.values())
    return {"shifted_share_of_selection": doms["shifted"]["selected"] / trained if trained
            else None,
            "shifted_share_of_pool": doms["shifted"]["pool"] / sum(d["pool"] for d in
                                                                   doms.values())}


def versus(a_dir, b_dir):
    from imagescore_det.evaluation.bootstrap import compare_files
    from imagescore_det.evaluation.detections import find_detections

    c = compare_files(find_detections(a_dir), find_detections(b_dir))
    return {"AP50_difference": c["AP50"]["difference"], "AP50_ci95": c["AP50"]["ci"],
            "p_value": c["AP50"]["p_value"], "AP_difference": c["AP"]["difference"],
            "AP_ci95": c["AP"]["ci"], "test_images": c["test_set"]["num_images"]}


def none_row(base_dir):
    import json

    from imagescore_det.engine.paired import PAIRED_DIR
    from imagescore_det.evaluation import ap50_of

    with open(os.path.join(base_dir, "report.json")) as f:
        report = json.load(f)
    return {"ap50_before": ap50_of(report["eval_before"]),
            "ap50_after": report["paired_baseline"]["summary"]["AP50_supervised_only"],
            "pseudo_images": 0, "dir": os.path.join(base_dir, PAIRED_DIR)}


KEYS = ("ap50_before", "ap50_after", "precision", "recall", "auroc", "share_correct_images",
        "shifted_share_of_selection", "shifted_share_of_pool", "pseudo_images",
        *(f"{key}{suffix}" for suffix in ("", "_typical", "_shifted") for key in (
            "auroc_stratified", "auroc_box", "auroc_box_confidence", "share_correct_boxes")),
        "auroc_typical", "auroc_shifted")


def aggregate(per_seed):
    """{key: {mean, std, min, max, n}} over seeds, plus the AP50 difference vs none."""
    out = {}
    for key in KEYS + ("AP50_difference",):
        values = [(r.get("vs_none") or {}).get(key) if key == "AP50_difference" else r.get(key)
                  for r in per_seed]
        values = [v for v in values if v is not None]
        if values:
            out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
                        if len(values) > 1 else 0.0, "min": float(min(values)),
                        "max": float(max(values)), "n": len(values)}
    return out


# --------------------------------------------------------------------------- reporting
def fmt(stat, digits=3, signed=False):
    if not stat:
        return "-"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(stat['mean'])} ± {stat['std']:.{digits}f}"


def markdown(result):
    seeds = result["seeds"]
    lines = [f"# bench_quality: selectors on the synthetic set ({len(seeds)} seeds: "
             f"{', '.join(map(str, seeds))})", "",
             f"Command: `{result['command']}`  ", f"Config: `{result['config']}` "
             f"(overrides: {' '.join(result['overrides']) or 'none'}); machine: "
             f"{result['machine']}; wall time {result['wall_seconds'] / 60:.0f} min.", "",
             "Mean ± standard deviation over seeds. Precision/recall: the pseudo-boxes of the "
             "images trained on (IoU 0.5). AUROC: the variant's score for \"all of this pool "
             "image's pseudo-boxes are correct\", over every pool image with a pseudo-box "
             "(random scores give 0.5 by design). "
             "AP50 diff: the end of the run minus `none` (supervised only, same checkpoint, "
             "iterations and random stream) on the test set.", "",
             "| variant | precision | recall | AUROC | shifted share | AP50 end | AP50 diff vs none |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, agg in result["mean_over_seeds"].items():
        lines.append(f"| {name} | {fmt(agg.get('precision'))} | {fmt(agg.get('recall'))} | "
                     f"{fmt(agg.get('auroc'))} | {fmt(agg.get('shifted_share_of_selection'))} | "
                     f"{fmt(agg.get('ap50_after'), 1)} | "
                     f"{fmt(agg.get('AP50_difference'), 1, True)} |")
    lines += ["", "Does the score predict correctness? AUROC, mean ± std over seeds: per image "
              "(all pseudo-boxes correct), the same counting only pairs of images with as many "
              "pseudo-boxes (stratified), per pseudo-box (the image's score; softmax: the box's "
              "own confidence), the detector's box confidence per box (the same detector in "
              "every variant), and per box in each domain of the pool.", "",
              "| variant | per image | stratified by box count | per box | box confidence | "
              "per image, typical | per box, typical | per image, shifted | per box, shifted |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, agg in result["mean_over_seeds"].items():
        if name == NONE:
            continue
        lines.append("| " + " | ".join([name] + [fmt(agg.get(key)) for key in (
            "auroc", "auroc_stratified", "auroc_box", "auroc_box_confidence", "auroc_typical",
            "auroc_box_typical", "auroc_shifted", "auroc_box_shifted")]) + " |")
    lines += ["", "Per seed: AP50 difference against `none` with its 95% paired bootstrap "
              "interval over the test images, and the one-sided p that the variant is not "
              "better; AUROC with its 95% bootstrap interval over pool images.", "",
              "| variant | seed | AP50 diff [95% CI] | p | AUROC [95% CI] |", "| --- | --- | --- | --- | --- |"]
    for name, runs in result["runs"].items():
        for seed, r in zip(seeds, runs):
            v = r.get("vs_none")
            diff = (f"{v['AP50_difference']:+.2f} [{v['AP50_ci95'][0]:+.2f}, "
                    f"{v['AP50_ci95'][1]:+.2f}] | {v['p_value']:.3f}") if v else "- | -"
            auc = (f"{r['auroc']:.3f} [{r['auroc_ci95'][0]:.3f}, {r['auroc_ci95'][1]:.3f}]"
                   if r.get("auroc") is not None else "-")
            lines.append(f"| {name} | {seed} | {diff} | {auc} |")
    if result["skipped_variants"]:
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in
                                              result["skipped_variants"].items())]
    lines += ["", "Variants:", ""] + [f"* `{k}`: {VARIANTS[k][0]}" for k in result["runs"]
                                      if k in VARIANTS]
    return "\n".join(lines) + "\n"


def plot(path, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["mean_over_seeds"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("precision", "pseudo-box precision (images trained on)"),
              ("auroc", "AUROC: score vs 'pseudo-boxes all correct'"),
              ("AP50_difference", "test AP50 minus supervised-only (none)"))
    for ax, (key, title) in zip(axes, panels):
        for i, name in enumerate(names):
            runs = result["runs"][name]
            vals = [(r.get("vs_none") or {}).get("AP50_difference") if key == "AP50_difference"
                    else r.get(key) for r in runs]
            vals = [v for v in vals if v is not None]
            if not vals:
                continue
            ax.bar(i, np.mean(vals), color="#9ecae1" if name != BASE else "#3182bd")
            ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
        if key == "auroc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        if key == "AP50_difference":
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"bench_quality, seeds {result['seeds']} (bars: mean; dots: seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS",
                                                    os.path.join(ROOT, "datasets")),
                   help="datasets root holding synthetic_voc/ (default: $DETECTRON2_DATASETS "
                        "or ./datasets)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "bench_quality"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_quality.json"))
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="extra config overrides for every run (KEY VALUE pairs)")
    args = p.parse_args(argv)
    if BASE not in args.variants:
        args.variants.insert(0, BASE)  # every branch starts from its round checkpoint
    from imagescore_det.data import generate_synthetic_voc

    args.root = os.path.abspath(args.root)
    os.environ["DETECTRON2_DATASETS"] = args.root
    generate_synthetic_voc(os.path.join(args.root, "synthetic_voc"))
    skipped = {name: why for name in args.variants if (why := available(name))}
    for name, why in skipped.items():
        log(f"skipping variant {name}: {why}")
    variants = [v for v in args.variants if v not in skipped]
    work_dir = os.path.abspath(args.work_dir)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        # base runs first (they are the long ones), then every branch as soon as its base ends
        seeds = [pool.submit(run_seed, s, variants, work_dir, threads, args.opts, pool)
                 for s in args.seeds]
        branches = [f for s in seeds for f in s.result()]
        for f in branches:
            f.result()
    runs = {NONE: []}
    runs.update({v: [] for v in variants})
    for seed in args.seeds:
        base_dir = os.path.join(work_dir, f"seed{seed}", BASE)
        none = none_row(base_dir)
        runs[NONE].append({k: v for k, v in none.items() if k != "dir"})
        for name in variants:
            runs[name].append(measure(os.path.join(work_dir, f"seed{seed}", name), none["dir"]))
    import platform

    result = {
        "benchmark": "quality", "seeds": args.seeds, "config": CONFIG, "overrides": args.opts,
        "root": recorded_path(args.root), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{args.jobs} runs at a time ({threads} thread(s) each)",
        "wall_seconds": time.time() - started,
        "command": " ".join(["benchmarks/bench_quality.py"] + (argv if argv is not None
                                                                else sys.argv[1:])),
        "variants": {k: {"what": VARIANTS[k][0], "overrides": VARIANTS[k][1]} for k in variants},
        "skipped_variants": skipped,
        "mean_over_seeds": {name: aggregate(rs) for name, rs in runs.items()},
        "runs": runs,
    }
    write_results(args.output, result, plot, markdown)


if __name__ == "__main__":
    main()
