#!/usr/bin/env python
"""How long tools/compare_runs.py takes on a test set of a given size.

Two synthetic "runs" on a synthetic ground truth (no images, no model: detections are noisy
copies of the truth boxes plus random boxes, scores rounded to 3 decimals like Detectron2's
VOC evaluator writes them) are compared with the paired bootstrap (AP50 and AP at 10 IoU
thresholds, every class). The default size is VOC2007 test's: 4952 images, 20 classes,
about 2.4 objects an image, here 50 detections an image (Detectron2 keeps up to 100 above
score 0.05).

``--root`` takes the ground truth from a VOC-layout root instead (``--split``, default
``test``; its first ``--images`` ids, default all): real image ids, boxes, object counts and
classes, the random boxes drawn inside each image's size; the runs are still synthetic.
``--seeds``: each seed draws the synthetic truth and runs and seeds the bootstrap's
resampling, one timed comparison per seed (default 0, as before).

Writes ``--output`` (default benchmarks/results/bench_bootstrap.json; with several seeds
``{"seeds": [...], "runs": [one comparison's JSON per seed]}``) and prints a summary.

    python benchmarks/bench_bootstrap.py                       # VOC07 test size, 1000 resamples
    python benchmarks/bench_bootstrap.py --images 100 --classes 4 --resamples 1000   # quickstart size
    python benchmarks/bench_bootstrap.py --root ../shared/voc2007-real --seeds 0 1 2   # real truth, 500 images
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _bench_cli import per_seed, recorded_path, root_help, voc_dir  # noqa: E402
from imagescore_det.evaluation.bootstrap import compare  # noqa: E402
from imagescore_det.evaluation.detections import Evaluation, test_set_fingerprint  # noqa: E402
from imagescore_det.utils import atomic_write_json  # noqa: E402


def _random_box(rng, size):
    """(x, y, w, h): the corner (x, y) uniform over the image (``size`` (width, height); None:
    a 400 x 400 extent, the synthetic draw), width and height uniform in [20, 200]."""
    x, y = rng.uniform(0, 400, 2) if size is None else rng.uniform(0, 1, 2) * size
    w, h = rng.uniform(20, 200, 2)
    return x, y, w, h


def synthetic_truth(rng, images, classes, objects):
    """(class names, image ids, truth, image sizes None): a Poisson(``objects``) number of
    random boxes an image, one in ten difficult."""
    names = [f"c{k}" for k in range(classes)]
    ids = [f"{i:06d}" for i in range(images)]
    truth = {}
    for image_id in ids:
        objs = []
        for _ in range(rng.poisson(objects)):
            x, y, w, h = _random_box(rng, None)
            objs.append([names[rng.integers(classes)], int(rng.random() < 0.1),
                         int(x), int(y), int(x + w), int(y + h)])
        truth[image_id] = objs
    return names, ids, truth, None


def voc_truth(dirname, split, images=None):
    """(class names, image ids, truth, image sizes) of a VOC directory's ``split`` (its first
    ``images`` ids): the objects as Detectron2's ``parse_rec`` reads them for the evaluator
    (``[name, difficult, xmin, ymin, xmax, ymax]``), the classes those present, sorted."""
    import xml.etree.ElementTree as ET

    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    if images is not None:
        if images > len(ids):
            sys.exit(f"error: --images {images}, but {split}.txt of {dirname} lists "
                     f"{len(ids)} ids; pass --images {len(ids)} or fewer")
        ids = ids[:images]
    truth, sizes = {}, {}
    for image_id in ids:
        root = ET.parse(os.path.join(dirname, "Annotations", f"{image_id}.xml")).getroot()
        sizes[image_id] = np.array([float(root.find("size/width").text),
                                    float(root.find("size/height").text)])
        truth[image_id] = [
            [obj.find("name").text.strip(), int(obj.findtext("difficult", "0")),
             *[int(float(obj.find(f"bndbox/{k}").text)) for k in ("xmin", "ymin", "xmax", "ymax")]]
            for obj in root.findall("object")]
    names = sorted({o[0] for objs in truth.values() for o in objs})
    return names, ids, truth, sizes


def noisy_runs(rng, names, ids, truth, dets, sizes=None):
    """Two runs (box noise 6 and 8 px): per image the truth boxes then random boxes up to
    ``dets`` detections, each jittered, with a random score rounded to 3 decimals."""
    runs = []
    for noise in (6.0, 8.0):
        per_class = {n: {"image_ids": [], "scores": [], "boxes": []} for n in names}
        for image_id in ids:
            candidates = [(o[0], np.array(o[2:6], float)) for o in truth[image_id]]
            while len(candidates) < dets:
                x, y, w, h = _random_box(rng, None if sizes is None else sizes[image_id])
                candidates.append((names[rng.integers(len(names))],
                                   np.array([x, y, x + w, y + h])))
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


def measure(args, seed, real=None):
    """One timed comparison: the synthetic truth (``real`` None) or ``real``'s."""
    rng = np.random.default_rng(seed)
    if real is None:
        names, ids, truth, sizes = synthetic_truth(rng, args.images, args.classes, args.objects)
    else:
        names, ids, truth, sizes = real
    a, b = noisy_runs(rng, names, ids, truth, args.dets, sizes)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = compare(a, b, resamples=args.resamples, seed=seed)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    objects = sum(len(objs) for objs in truth.values())
    out = {"images": len(ids), "classes": len(names), "detections_per_image": args.dets,
           "resamples": args.resamples, "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu, 2),
           "AP50": result["AP50"], "AP": result["AP"],
           "seed": seed, "objects_per_image": round(objects / max(len(ids), 1), 3),
           "truth": "synthetic" if real is None else {"root": recorded_path(args.voc_dir),
                                                        "split": args.split},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__,
                       "load_average_at_end": os.getloadavg()}}
    s = result["AP50"]
    print(f"{'' if len(args.seeds) == 1 else f'[seed {seed}] '}{len(ids)} images x "
          f"{len(names)} classes, {args.dets} detections an image, "
          f"{args.resamples} resamples: {seconds:.1f} s ({cpu:.1f} s of CPU time) (AP50 {s['a']:.2f} vs {s['b']:.2f}, "
          f"difference {s['difference']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]); "
          f"load average {os.getloadavg()[0]:.1f}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None,
                        help=root_help(["<split>"], "the ground truth to use instead of the "
                                       "synthetic one", default=False) + "; default: none, the "
                        "synthetic truth")
    parser.add_argument("--split", default="test", help="with --root: the split (default test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one comparison per seed: the synthetic draws and the bootstrap's "
                        "resampling (default 0)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images (default 4952; with --root all of the split)")
    parser.add_argument("--classes", type=int, default=None,
                        help="synthetic truth only (default 20)")
    parser.add_argument("--objects", type=float, default=None,
                        help="synthetic truth only: mean objects an image (default 2.4)")
    parser.add_argument("--dets", type=int, default=50, help="detections per image")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                         "bench_bootstrap.json"),
                        help="JSON result path (default: %(default)s)")
    args = parser.parse_args(argv)
    real = None
    if args.root is None:
        args.images = 4952 if args.images is None else args.images
        args.classes = 20 if args.classes is None else args.classes
        args.objects = 2.4 if args.objects is None else args.objects
    else:
        if args.classes is not None or args.objects is not None:
            parser.error("--classes and --objects shape the synthetic truth; with --root the "
                         "truth is the split's")
        args.voc_dir = voc_dir(args.root, [args.split])
        real = voc_truth(args.voc_dir, args.split, args.images)
    results = [measure(args, seed, real) for seed in args.seeds]
    atomic_write_json(args.output, per_seed(results, args.seeds))


if __name__ == "__main__":
    main()
