#!/usr/bin/env python
"""Generate the synthetic shapes dataset (Pascal VOC layout) used by imagescore-det.

    python datasets/prepare_synthetic_voc.py                    # $DETECTRON2_DATASETS/synthetic_voc
    python datasets/prepare_synthetic_voc.py --root /tmp/sv --seed 1 --num-labeled 50
    python datasets/prepare_synthetic_voc.py --headroom         # + the headroom protocol's two

Deterministic for a given seed and parameters. Running it again with the same parameters
does nothing; with different ones it stops and asks to delete the directory or choose
another --root. See datasets/README.md for the layout, splits, domains and meta.json.
"""
import argparse
import inspect
import os
import sys
import time

# run from a source checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imagescore_det.data.synthetic import SPLITS, generate_synthetic_voc  # noqa: E402


def main(argv=None):
    default_root = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "synthetic_voc")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=default_root,
                   help="dataset root; VOC2007/ is created inside it "
                        "(default: $DETECTRON2_DATASETS/synthetic_voc = %(default)s)")
    # the defaults are generate_synthetic_voc's own, so the two cannot drift apart
    default = {name: par.default for name, par in
               inspect.signature(generate_synthetic_voc).parameters.items()}
    p.add_argument("--seed", type=int, default=default["seed"])
    p.add_argument("--num-labeled", type=int, default=default["num_labeled"])
    p.add_argument("--num-unlabeled", type=int, default=default["num_unlabeled"])
    p.add_argument("--num-test", type=int, default=default["num_test"])
    p.add_argument("--min-size", type=int, default=default["min_size"],
                   help="min image width/height (px)")
    p.add_argument("--max-size", type=int, default=default["max_size"],
                   help="max image width/height (px)")
    p.add_argument("--shifted-fraction", type=float, default=default["shifted_fraction"],
                   help="share of the unlabeled pool drawn from the shifted domain")
    p.add_argument("--min-obj-size", type=int, default=default["min_obj_size"],
                   help="min larger side of an object's box (px)")
    p.add_argument("--max-obj-size", type=int, default=default["max_obj_size"],
                   help="max larger side of an object's box (px; capped at 60%% of the "
                        "image's shorter side)")
    p.add_argument("--max-objects", type=int, default=default["max_objects"])
    p.add_argument("--headroom", action="store_true",
                   help="also generate the headroom protocol's datasets (40 labeled, a pool of "
                        "460 from the same distribution or 40%% shifted, 200 test: "
                        "synthetic_headroom, synthetic_headroom_shifted) beside --root, in its "
                        "parent directory; configs/synthetic/*_headroom.yaml read them")
    args = p.parse_args(argv)

    t0 = time.time()
    try:
        meta = generate_synthetic_voc(
            args.root, seed=args.seed, num_labeled=args.num_labeled,
            num_unlabeled=args.num_unlabeled, num_test=args.num_test, min_size=args.min_size,
            max_size=args.max_size, shifted_fraction=args.shifted_fraction,
            min_obj_size=args.min_obj_size, max_obj_size=args.max_obj_size,
            max_objects=args.max_objects)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = meta["dirname"]
    if meta["generated"]:
        print(f"Wrote {sum(meta['splits'][s] for s in ('labeled', 'unlabeled', 'test'))} "
              f"images to {d} in {time.time() - t0:.1f}s")
    else:
        print(f"{d} already holds this dataset (same parameters); nothing written")
    print(f"  classes: {', '.join(meta['classes'])}  (seed {meta['seed']})")
    for split in SPLITS:
        print(f"  {os.path.join(d, 'ImageSets', 'Main', split + '.txt')}: "
              f"{meta['splits'][split]} ids")
    print(f"  unlabeled pool: {meta['num_shifted_unlabeled']} shifted, "
          f"{meta['splits']['unlabeled'] - meta['num_shifted_unlabeled']} typical")
    print("  objects per class: " + ", ".join(f"{c} {meta['num_objects'][c]}"
                                              for c in meta["classes"]))
    print(f"  metadata: {os.path.join(d, 'synthetic_meta.json')}")
    if args.headroom:
        from imagescore_det.data import HEADROOM_DATASETS, generate_headroom_datasets

        t0 = time.time()
        dirs = generate_headroom_datasets(os.path.dirname(os.path.abspath(args.root)))
        for name, dirname in dirs.items():
            params = HEADROOM_DATASETS[name]
            print(f"{name}: {dirname} ({params['num_labeled']} labeled, "
                  f"{params['num_unlabeled']} pool, {params['shifted_fraction']:.0%} shifted, "
                  f"{params['num_test']} test)")
        print(f"  headroom datasets ready in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
