#!/usr/bin/env python
"""How long the data checks take on a pool of ~20k images, and whether they find exactly the
faults planted in it.

    python benchmarks/bench_data_checks.py                  # 8 copies of voc2007-real (19,808)
    python benchmarks/bench_data_checks.py --copies 2 --deep
    python benchmarks/bench_data_checks.py --root DIR --seeds 0 1 2 --output /tmp/checks.json

The pool is the real VOC2007 photos of ``--root`` (a VOC-layout root holding
``VOC2007/ImageSets/Main/trainval.txt``; default ``$IMAGESCORE_VOC07REAL`` if set, else
../shared/voc2007-real) linked ``--copies`` times under new ids in a temporary VOC directory
(symbolic links: nothing is copied, and the planted faults replace their link by a new file,
never touching the originals). 1% of the ids get a fault: a third truncated, a third zero
bytes, a third an HTML page. Which ids: every 100th by default; with ``--seeds``, a random
1% drawn with each seed, the pool rebuilt and every check timed once per seed. Then
``check_voc`` runs as the trainer runs it (one process, header reads) and as
``tools/check_dataset.py`` runs it (``--workers`` processes), and with ``--deep`` a full
decode. Warm page cache (every file was read once before timing). Results (``--output``):
``benchmarks/results/bench_data_checks.json``; with several seeds ``{"seeds": [...],
"runs": [one run's JSON per seed]}``.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from _bench_cli import description, per_seed, recorded_path, resolve_voc_root, root_help  # noqa: E402

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def _replace(path, data):
    os.unlink(path)  # the link, not the original
    with open(path, "wb") as f:
        f.write(data)


def build(src, dest, copies, fault_every, seed=None):
    """Link ``copies`` x the trainval ids of ``src`` under ``dest`` and plant a fault in one
    id of every ``fault_every``: every ``fault_every``-th id (``seed`` None) or as many
    drawn at random with ``seed``; the kinds cycle over them. Returns (ids, planted)."""
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(dest, sub))
    with open(os.path.join(src, "ImageSets", "Main", "trainval.txt")) as f:
        base = [line.strip() for line in f if line.strip()]
    ids, planted = [], {}
    for c in range(copies):
        for image_id in base:
            new = f"{c}{image_id}"
            for sub, ext in (("Annotations", ".xml"), ("JPEGImages", ".jpg")):
                os.symlink(os.path.join(src, sub, image_id + ext),
                           os.path.join(dest, sub, new + ext))
            ids.append(new)
    faulty = ids[::fault_every]
    if seed is not None:
        import numpy as np

        rng = np.random.default_rng(seed)
        faulty = [ids[i] for i in rng.choice(len(ids), size=len(faulty), replace=False)]
    for k, image_id in enumerate(faulty):
        path = os.path.join(dest, "JPEGImages", image_id + ".jpg")
        with open(path, "rb") as f:
            data = f.read()
        kind = ("truncated_image", "empty_image", "not_an_image")[k % 3]
        _replace(path, {"truncated_image": data[:len(data) // 2], "empty_image": b"",
                        "not_an_image": b"<html><body>404 Not Found</body></html>"}[kind])
        planted[path] = kind
    with open(os.path.join(dest, "ImageSets", "Main", "pool.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return ids, planted


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(src, args, seed):
    """One pool (built with ``seed``'s faults), every check timed once: the run's JSON."""
    from imagescore_det.data.checks import check_voc

    work = tempfile.mkdtemp(prefix="bench_data_checks_")
    try:
        dest = os.path.join(work, "VOC2007")
        ids, planted = build(src, dest, args.copies, fault_every=100, seed=seed)
        check_voc(dest, "pool", VOC_CLASSES)  # warm the page cache
        results = {"images": len(ids), "planted": len(planted), "cpu_count": os.cpu_count(),
                   "root": recorded_path(src), "seed": seed, "load_average_before": os.getloadavg()}
        runs = [("header, 1 process (trainer start)", dict(workers=1)),
                (f"header, {args.workers} processes (tools/check_dataset.py)",
                 dict(workers=args.workers))]
        if args.deep:
            runs.append((f"deep, {args.workers} processes (--deep)",
                         dict(workers=args.workers, deep=True)))
        for label, kwargs in runs:
            report, seconds = timed(lambda: check_voc(dest, "pool", VOC_CLASSES, **kwargs))
            found = {f.path: f.kind for f in report.findings}
            exact = found == planted
            results[label] = {"seconds": round(seconds, 2),
                              "images_per_second": round(len(ids) / seconds),
                              "findings": len(report.findings), "exactly_the_planted": exact}
            print(f"{'' if seed is None else f'[seed {seed}] '}{label}: {len(ids)} images in "
                  f"{seconds:.1f} s ({len(ids) / seconds:.0f}/s), {len(report.findings)} "
                  f"findings, exactly the {len(planted)} planted: {exact}")
        results["load_average_after"] = os.getloadavg()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=description(__doc__))
    p.add_argument("--root", default=None, help=root_help(["trainval"]))
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="draw the faulty ids at random with each seed (one pool and one timing "
                   "per seed); default: every 100th id, no random draw")
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--deep", action="store_true", help="also time a full decode")
    p.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results",
                                                    "bench_data_checks.json"),
                   help="JSON result path (default: %(default)s)")
    args = p.parse_args(argv)
    src = resolve_voc_root(args.root, ["trainval"])
    seeds = args.seeds or [None]
    results = per_seed([measure(src, args, seed) for seed in seeds], seeds)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
