#!/usr/bin/env python
"""The synthetic shapes data as a user's own data: COCO json (labeled, test) + a folder of photos.

    python tools/prepare_synthetic_coco.py        # -> $DETECTRON2_DATASETS/synthetic_coco
    python tools/prepare_synthetic_coco.py --root /tmp/sc --num-labeled 50

Generates the synthetic VOC set (datasets/prepare_synthetic_voc.py's generator, same seed
and sizes options) under <root>/voc, then writes what a labeling tool's export and a
camera's folder look like:

    <root>/annotations/labeled.json   COCO instances json of the labeled split
    <root>/annotations/test.json      COCO instances json of the test split
    <root>/images/                    their images (file_name in the jsons is relative to it)
    <root>/unlabeled/<a|b>/...jpg     the unlabeled pool, no annotations, in two sub-folders

configs/custom/*.yaml register them with DATASETS.REGISTER (README "Your own data").
Running it again with the same options rewrites the same files.
"""
import argparse
import inspect
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_synthetic_coco(root, **generator_options):
    """Write the layout of the module docstring under ``root``; returns the paths."""
    from imagescore_det.data.coco import dicts_to_coco
    from imagescore_det.data.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc
    from imagescore_det.data.voc import load_voc_dicts
    from imagescore_det.utils import atomic_write_text

    meta = generate_synthetic_voc(os.path.join(root, "voc"), **generator_options)
    dirname = meta["dirname"]
    images = os.path.join(root, "images")
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(images, exist_ok=True)
    out = {}
    for split in ("labeled", "test"):
        dicts = load_voc_dicts(dirname, split, SYNTHETIC_CLASSES)
        for d in dicts:
            target = os.path.join(images, os.path.basename(d["file_name"]))
            shutil.copyfile(d["file_name"], target)
            d["file_name"] = target
        path = os.path.join(root, "annotations", f"{split}.json")
        atomic_write_text(path, json.dumps(dicts_to_coco(dicts, SYNTHETIC_CLASSES, images)))
        out[split] = path
    pool = os.path.join(root, "unlabeled")
    for k, d in enumerate(load_voc_dicts(dirname, "unlabeled", SYNTHETIC_CLASSES)):
        sub = os.path.join(pool, "ab"[k % 2])  # folders are read recursively
        os.makedirs(sub, exist_ok=True)
        shutil.copyfile(d["file_name"], os.path.join(sub, os.path.basename(d["file_name"])))
    out["unlabeled"], out["images"] = pool, images
    return out


def main(argv=None):
    from imagescore_det.data.synthetic import generate_synthetic_voc

    default_root = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "synthetic_coco")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=default_root, help="output directory (default: %(default)s)")
    default = {name: par.default for name, par in
               inspect.signature(generate_synthetic_voc).parameters.items()}
    for option in ("seed", "num_labeled", "num_unlabeled", "num_test"):
        p.add_argument("--" + option.replace("_", "-"), type=int, default=default[option])
    args = p.parse_args(argv)
    paths = write_synthetic_coco(args.root, seed=args.seed, num_labeled=args.num_labeled,
                                 num_unlabeled=args.num_unlabeled, num_test=args.num_test)
    for key, path in paths.items():
        print(f"{key:10s} {path}")
    return paths


if __name__ == "__main__":
    main()
