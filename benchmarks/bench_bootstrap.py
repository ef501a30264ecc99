#!/usr/bin/env python
"""How long tools/compare_runs.py takes on a test set of a given size.

Two synthetic "runs" on a synthetic ground truth (no images, no model: detections are noisy
copies of the truth boxes plus random boxes, scores rounded to 3 decimals like Detectron2's
VOC evaluator writes them) are compared with the paired bootstrap (AP50 and AP at 10 IoU
thresholds, every class). The default size is VOC2007 test's: 4952 images, 20 classes,
about 2.4 objects an image, here 50 detections an image (Detectron2 keeps up to 100 above
score 0.05).

Writes benchmarks/results/bench_bootstrap.json and prints a summary.

    python benchmarks/bench_bootstrap.py                       # VOC07 test size, 1000 resamples
    python benchmarks/bench_bootstrap.py --images 100 --classes 4 --resamples 1000   # quickstart size
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from imagescore_det.evaluation.bootstrap import compare  # noqa: E402
from imagescore_det.evaluation.detections import Evaluation, test_set_fingerprint  # noqa: E402
from imagescore_det.utils import atomic_write_json  # noqa: E402


def synthetic_runs(images, classes, objects, dets, seed):
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(classes)]
    ids = [f"{i:06d}" for i in range(images)]
    truth = {}
    for image_id in ids:
        objs = []
        for _ in range(rng.poisson(objects)):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(20, 200, 2)
            objs.append([names[rng.integers(classes)], int(rng.random() < 0.1),
                         int(x), int(y), int(x + w), int(y + h)])
        truth[image_id] = objs
    runs = []
    for noise in (6.0, 8.0):
        per_class = {n: {"image_ids": [], "scores": [], "boxes": []} for n in names}
        for image_id in ids:
            candidates = [(o[0], np.array(o[2:6], float)) for o in truth[image_id]]
            while len(candidates) < dets:
                x, y = rng.uniform(0, 400, 2)
                w, h = rng.uniform(20, 200, 2)
                candidates.append((names[rng.integers(classes)], np.array([x, y, x + w, y + h])))
            for name, box in candidates[:dets]:
                b = box + rng.normal(0, noise, 4)
                d = per_class[name]
                d["image_ids"].append(image_id)
                d["scores"].append(round(float(rng.random()), 3))
                d["boxes"].append([round(float(v), 1) for v in b])
        runs.append(Evaluation(path=f"synthetic_{noise}", dataset="synthetic", classes=names,
                               use_07_metric=True, image_ids=ids, ground_truth=truth,
                               detections=per_class,
                               fingerprint=test_set_fingerprint(ids, truth, names, True)))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4952)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--objects", type=float, default=2.4)
    parser.add_argument("--dets", type=int, default=50, help="detections per image")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                         "bench_bootstrap.json"))
    args = parser.parse_args()
    a, b = synthetic_runs(args.images, args.classes, args.objects, args.dets, seed=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = compare(a, b, resamples=args.resamples)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    out = {"images": args.images, "classes": args.classes, "detections_per_image": args.dets,
           "resamples": args.resamples, "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu, 2),
           "AP50": result["AP50"], "AP": result["AP"],
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__,
                       "load_average_at_end": os.getloadavg()}}
    atomic_write_json(args.output, out)
    s = result["AP50"]
    print(f"{args.images} images x {args.classes} classes, {args.dets} detections an image, "
          f"{args.resamples} resamples: {seconds:.1f} s ({cpu:.1f} s of CPU time) (AP50 {s['a']:.2f} vs {s['b']:.2f}, "
          f"difference {s['difference']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
