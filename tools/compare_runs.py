#!/usr/bin/env python
"""Is run B better than run A? A paired bootstrap over the test images of two runs.

    python tools/compare_runs.py output/synthetic/supervised output/synthetic/imagescore
    python tools/compare_runs.py RUN_A RUN_B --json cmp.json --markdown cmp.md
    python tools/compare_runs.py a/inference/detections_voc_2007_test.json b/inference/...

RUN_A / RUN_B: a run's OUTPUT_DIR (its inference/detections_<dataset>.json, written by every
VOC evaluation; --dataset picks one when there are several) or a detections file. Both must
have been evaluated on the same test set (same images, same ground truth), or it stops.

Each of --resamples resamples (default 1000, seeded by --seed) draws the test images with
replacement; both runs' VOC AP50 and AP are recomputed on it. Printed (Markdown): both runs'
AP50 and AP, the difference B - A with its 95% interval, the one-sided p-value (share of
resamples in which B does not beat A, ties half: small p = B better), and the same per class.
AP and its mean are the evaluator's: a class without ground truth counts as voc_eval scores
it (0 with the VOC2007 11-point metric), as in the evaluator's AP50, and is named.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imagescore_det.evaluation.bootstrap import (  # noqa: E402
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    TestSetMismatchError,
    compare_files,
    format_markdown,
)
from imagescore_det.evaluation.detections import DetectionsFileError, find_detections  # noqa: E402
from imagescore_det.utils import atomic_write_json, atomic_write_text  # noqa: E402


def _name(run):
    run = os.path.normpath(run)
    if os.path.isfile(run):
        parts = run.split(os.sep)
        return parts[-3] if len(parts) >= 3 and parts[-2] == "inference" else parts[-1]
    return os.path.basename(run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", help="baseline run: OUTPUT_DIR or detections_<dataset>.json")
    parser.add_argument("run_b", help="candidate run: OUTPUT_DIR or detections_<dataset>.json")
    parser.add_argument("--dataset", help="test dataset, when a run has several")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--json", help="write the full result (JSON) here")
    parser.add_argument("--markdown", help="write the Markdown report here too")
    args = parser.parse_args(argv)
    if args.resamples < 1 or not 0 < args.confidence < 1:
        parser.error("--resamples must be >= 1 and --confidence in (0, 1)")
    try:
        path_a = find_detections(args.run_a, args.dataset)
        path_b = find_detections(args.run_b, args.dataset)
        start = time.perf_counter()
        result = compare_files(path_a, path_b, resamples=args.resamples, seed=args.seed,
                               confidence=args.confidence)
    except (DetectionsFileError, TestSetMismatchError) as e:
        sys.exit(f"error: {e}")
    result["names"] = {"a": _name(args.run_a), "b": _name(args.run_b)}
    result["seconds"] = round(time.perf_counter() - start, 3)
    markdown = format_markdown(result, result["names"]["a"], result["names"]["b"])
    print(markdown)
    if args.json:
        atomic_write_json(args.json, result)
    if args.markdown:
        atomic_write_text(args.markdown, markdown)
    return result


if __name__ == "__main__":
    main()
