#!/usr/bin/env python
"""Does Image Score selection give better pseudo-labels and a better detector? Measured.

Runs the quickstart schedule once per registered selector (image_score, softmax, random,
hybrid, image_score_per_class, none = supervised only; ``--selectors`` picks some) with the
same seed, through ``tools/train_net.py`` (one process each, in sequence), on the synthetic
dataset whose pool truth is known, then compares:

* pseudo-label precision / recall of the selected images (against the hidden truth),
* the share of the selection drawn from the pool's shifted domain,
* with IMAGE_SCORE.ANALYZE_POOL, the precision the same pseudo-labelling rule gets on every
  pool image, by score decile: does a higher score mean better pseudo-labels?
* VOC AP50 on the test split before the selection round and at the end;
* each selector against supervised-only (``none``) of the same seed: the AP50 difference,
  its 95% paired bootstrap interval over the test images and the one-sided p-value
  (``imagescore_det.evaluation.bootstrap``, as ``tools/compare_runs.py``). The ``none`` run
  is every selector's paired baseline (same checkpoint and random stream at the round, see
  README "Quick start"), so the runs turn IMAGE_SCORE.PAIRED_BASELINE off and train once.

Budget: about one quickstart's time per selector (4-8 minutes each on 2 CPU cores).
Several seeds (``--seeds 0 1 2``) multiply it. A finished run is not repeated (its report.json is reused),
so an interrupted benchmark resumes where it stopped.

    .venv/bin/python benchmarks/bench_quality.py                  # 1 seed, every selector
    .venv/bin/python benchmarks/bench_quality.py --selectors image_score softmax random none
    .venv/bin/python benchmarks/bench_quality.py --seeds 0 1 2    # 3 seeds

Writes benchmarks/results/bench_quality.json and bench_quality.png, prints a table.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from imagescore_det.engine.selectors import config_selector_names  # noqa: E402
from imagescore_det.evaluation import ap50_of  # noqa: E402

SELECTORS = config_selector_names()
CONFIG = os.path.join(ROOT, "configs", "synthetic", "imagescore_V16tiny_quick.yaml")


def run_one(selector, seed, out_dir, extra):
    report = os.path.join(out_dir, "report.json")
    if os.path.isfile(report):
        print(f"[{selector} seed {seed}] reusing {report}", flush=True)
    else:
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
               CONFIG, "IMAGE_SCORE.SELECTOR", selector, "SEED", str(seed),
               "IMAGE_SCORE.ANALYZE_POOL", "True",
               # the none run of the same seed is the paired baseline (compared below)
               "IMAGE_SCORE.PAIRED_BASELINE", "False",
               "OUTPUT_DIR", out_dir, *extra]
        print(f"[{selector} seed {seed}] {' '.join(cmd)}", flush=True)
        with open(os.path.join(os.path.dirname(out_dir), f"{os.path.basename(out_dir)}.log"),
                  "w") as log:
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    with open(report) as f:
        return json.load(f)


def summarize(report):
    row = {"ap50_before": ap50_of(report["eval_before"]), "ap50_after": ap50_of(report["eval_after"])}
    if report["rounds"]:
        r = report["rounds"][0]
        row.update(precision=r.get("pseudo_precision"), recall=r.get("pseudo_recall"),
                   pseudo_images=r["num_pseudo_images"], pseudo_boxes=r["num_pseudo_boxes"],
                   selection_seconds=r["timing"]["selection_total_s"])
        doms = r.get("domains")
        if doms:
            row["shifted_share_of_selection"] = doms["shifted"]["selected"] / r["num_selected"]
            row["shifted_share_of_pool"] = doms["shifted"]["pool"] / r["pool_size"]
        row["precision_by_score_bin"] = r.get("precision_by_score_bin")
        # the same pseudo-labelling rule applied to the whole pool (ANALYZE_POOL)
        row["pool_precision_by_score_bin"] = r.get("pool_precision_by_score_bin")
        row["pool_precision_selected"] = r.get("pool_precision_selected")
        row["pool_precision_rest"] = r.get("pool_precision_rest")
        bins = r.get("pool_precision_by_score_bin") or []
        if len(bins) >= 2 and bins[0]["precision"] is not None and bins[-1]["precision"] is not None:
            row["pool_precision_top_minus_bottom_decile"] = bins[-1]["precision"] - bins[0]["precision"]
    return row


def versus_supervised(supervised_dir, run_dir):
    """The paired bootstrap of a run against the none run of its seed (None when a run has
    no per-image detections, e.g. a reused report from before they were saved)."""
    from imagescore_det.evaluation.bootstrap import compare_files
    from imagescore_det.evaluation.detections import DetectionsFileError, find_detections

    try:
        result = compare_files(find_detections(supervised_dir), find_detections(run_dir))
    except DetectionsFileError as e:
        print(f"  (no paired comparison for {run_dir}: {e})")
        return None
    return {"AP50_difference": result["AP50"]["difference"], "AP50_ci95": result["AP50"]["ci"],
            "p_value": result["AP50"]["p_value"], "AP_difference": result["AP"]["difference"],
            "AP_ci95": result["AP"]["ci"], "resamples": result["bootstrap"]["resamples"]}


def mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def plot(path, table):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sels = list(table)
    for ax, key, title in ((axes[0], "precision", "pseudo-label precision (IoU 0.5)"),
                           (axes[1], "ap50_after", "test AP50 at the end")):
        vals = [table[s].get(key) or 0.0 for s in sels]
        ax.bar(sels, vals, color=["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"][: len(sels)])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "bench_quality"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_quality.json"))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE overrides")
    args = p.parse_args()
    from imagescore_det.data import generate_synthetic_voc
    from imagescore_det.utils import atomic_write_json

    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
    generate_synthetic_voc(os.path.join(os.environ["DETECTRON2_DATASETS"], "synthetic_voc"))
    os.makedirs(args.work_dir, exist_ok=True)
    runs = {}
    for seed in args.seeds:
        for sel in args.selectors:
            out = os.path.join(args.work_dir, f"{sel}_seed{seed}")
            runs.setdefault(sel, []).append(summarize(run_one(sel, seed, out, args.opts)))
        if "none" in args.selectors:
            for sel in args.selectors:
                if sel != "none":
                    runs[sel][-1]["vs_supervised"] = versus_supervised(
                        os.path.join(args.work_dir, f"none_seed{seed}"),
                        os.path.join(args.work_dir, f"{sel}_seed{seed}"))
    keys = ("ap50_before", "ap50_after", "precision", "recall", "pseudo_images",
            "shifted_share_of_selection", "shifted_share_of_pool", "selection_seconds",
            "pool_precision_selected", "pool_precision_rest",
            "pool_precision_top_minus_bottom_decile")
    table = {sel: {k: mean_or_none([r.get(k) for r in rs]) for k in keys}
             for sel, rs in runs.items()}
    result = {"benchmark": "quality", "seeds": args.seeds, "config": os.path.relpath(CONFIG, ROOT),
              "overrides": args.opts, "mean_over_seeds": table, "runs": runs,
              "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}
    atomic_write_json(args.output, result)
    plot(os.path.splitext(args.output)[0] + ".png", table)

    def fmt(v):
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"\nmean over seeds {args.seeds}")
    print("selector     AP50 before  AP50 after  precision  recall  shifted share (pool)"
          "  pool prec. selected / rest / top-bottom decile")
    for sel, row in table.items():
        print(f"{sel:<12} {fmt(row['ap50_before'])}      {fmt(row['ap50_after'])}      "
              f"{fmt(row['precision'])}    {fmt(row['recall'])}  "
              f"{fmt(row['shifted_share_of_selection'])} ({fmt(row['shifted_share_of_pool'])})"
              f"    {fmt(row['pool_precision_selected'])} / {fmt(row['pool_precision_rest'])}"
              f" / {fmt(row['pool_precision_top_minus_bottom_decile'])}")
    print("\nagainst supervised-only of the same seed (AP50 difference, 95% paired bootstrap "
          "interval over the test images, one-sided p that the selector is not better)")
    for sel, rs in runs.items():
        for seed, r in zip(args.seeds, rs):
            v = r.get("vs_supervised")
            if v:
                print(f"{sel:<12} seed {seed}: {v['AP50_difference']:+6.2f} "
                      f"[{v['AP50_ci95'][0]:+6.2f}, {v['AP50_ci95'][1]:+6.2f}]  p = "
                      f"{v['p_value']:.3f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
