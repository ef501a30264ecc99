#!/usr/bin/env python
"""Check data sets before hours of training: the checks the trainer runs at start, by hand.

    python tools/check_dataset.py synthetic_voc_unlabeled voc_2012_trainval   # registered names
    python tools/check_dataset.py datasets/VOC2012 --split trainval           # a VOC directory
    python tools/check_dataset.py --config-file configs/voc07_voc12/faster_rcnn_V16_imagescore.yaml
    python tools/check_dataset.py --deep NAME                                 # decode every image
    python tools/check_dataset.py mine/train.json --image-root mine/images   # a COCO json
    python tools/check_dataset.py mine/unlabeled                              # a folder of images

Finds missing, unreadable, empty, non-image, truncated (no JPEG end marker FF D9) and corrupt
images, XML that does not parse, XML sizes that differ from the image's, unknown classes,
degenerate and out-of-image boxes, duplicate ids and empty splits (see
imagescore_det/data/checks.py); in a COCO json also unknown category ids, annotations of no
image, duplicate image ids and iscrowd objects (a note), in a folder byte-identical copies
and files that are not read (notes; data/coco_checks.py). A VOC test set (--as-test, or a
DATASETS.TEST dataset of --config-file) is also read with Detectron2's VOC evaluator's
parser (parse_rec): an annotation it cannot read (no <pose>/<truncated>/<difficult>, a box
of 156.5) or reads with another class name than the loader (<name>car </name>) is a
finding, as at trainer start. Each problem is printed as ``file[:line]: kind: what`` with
the split file's line that lists the id, then how to fix each kind. Header reads only,
unless --deep (a full decode of every image, as the data loader will do).

Exit status: 0 nothing found (notes aside), 1 problems found, 2 a name or path that cannot be
checked.
"""
import argparse
import dataclasses
import difflib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imagescore_det.data.checks import NOTE_KINDS, check_voc, format_findings  # noqa: E402
from imagescore_det.data.coco_checks import check_coco_json, check_image_folder  # noqa: E402
from imagescore_det.data.coco_format import list_folder_images  # noqa: E402


def _voc_dirs(path):
    """VOC directories at or directly under ``path`` (datasets/VOC2012, or datasets/)."""
    if os.path.isdir(os.path.join(path, "Annotations")):
        return [path]
    return [os.path.join(path, d) for d in sorted(os.listdir(path))
            if os.path.isdir(os.path.join(path, d, "Annotations"))]


def _splits(dirname, classes):
    main = os.path.join(dirname, "ImageSets", "Main")
    if not os.path.isdir(main):
        return []
    names = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt"))
    # VOC's per-class files (aeroplane_trainval.txt, ...) are not splits
    return [n for n in names if n.split("_")[0] not in set(classes)]


def _classes_for(dirname, given):
    if given:
        return [c.strip() for c in given.split(",") if c.strip()]
    from imagescore_det.data.synthetic import read_synthetic_meta

    meta = read_synthetic_meta(dirname)
    if meta is not None and meta.get("classes"):
        return list(meta["classes"])
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES

    return list(CLASS_NAMES)


def _evaluator_parser(as_test):
    if not as_test:
        return None
    from detectron2.evaluation.pascal_voc_evaluation import parse_rec

    return parse_rec


class CannotCheck(Exception):
    """A name or path that names no data set to check (exit status 2, not 1: findings)."""


def _targets(args):
    """[(label, role or None, callable(shard) -> CheckReport)]; raises CannotCheck."""
    out = []
    for target in args.targets:
        if target.lower().endswith(".json"):  # a COCO instances json
            root = args.image_root or os.path.dirname(os.path.abspath(target))
            out.append((f"{target} (COCO json, images in {root})", None,
                        lambda t=target, r=root: check_coco_json(t, r, deep=args.deep,
                                                                 workers=args.workers)))
            continue
        if os.path.isdir(target) and not _voc_dirs(target) and list_folder_images(target)[0]:
            out.append((f"{target} (image folder)", None, lambda t=target: check_image_folder(
                t, deep=args.deep, workers=args.workers)))
            continue
        if os.path.isdir(target):
            dirs = _voc_dirs(target)
            if not dirs:
                raise CannotCheck(f"{target} is not a Pascal VOC directory (no Annotations/), "
                                  "holds none, and holds no images. Pass a VOC directory (e.g. "
                                  "datasets/VOC2012), a folder of images, a COCO json or a "
                                  "registered dataset name.")
            for dirname in dirs:
                classes = _classes_for(dirname, args.classes)
                splits = args.split or _splits(dirname, classes)
                if not splits:
                    raise CannotCheck(f"{dirname} has no split files in ImageSets/Main; pass "
                                      "--split.")
                for split in splits:
                    out.append((f"{dirname} split {split}", None,
                                lambda d=dirname, s=split, c=classes: check_voc(
                                    d, s, c, deep=args.deep, workers=args.workers,
                                    evaluator_parser=_evaluator_parser(args.as_test))))
            continue
        from detectron2.data import DatasetCatalog

        from imagescore_det.engine.data_checks import check_registered_dataset

        if target not in DatasetCatalog.list():
            close = difflib.get_close_matches(target, DatasetCatalog.list(), n=5)
            raise CannotCheck(f"{target!r} is neither a directory nor a registered dataset. "
                     f"Registered names close to it: {close}. (DETECTRON2_DATASETS is "
                     f"{os.getenv('DETECTRON2_DATASETS', 'datasets')!r}.)")
        out.append((target, None, lambda n=target: check_registered_dataset(
            n, deep=args.deep, workers=args.workers, evaluation=args.as_test)))
    if args.config_file:
        from imagescore_det.engine import data_checks, load_config

        cfg = load_config(args.config_file, args.opts)
        for name, role, keys in data_checks.config_datasets(cfg):
            out.append((f"{name} ({role}: {keys})", role,
                        lambda n=name, k=keys: data_checks.check_registered_dataset(
                            n, deep=args.deep, workers=args.workers,
                            evaluation=data_checks.evaluated(k))))
        args.policy = cfg.IMAGE_SCORE.ON_BAD_IMAGE
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("targets", nargs="*", metavar="NAME_OR_ROOT",
                   help="registered dataset names, Pascal VOC directories, COCO json files "
                        "or folders of images")
    p.add_argument("--image-root", help="the images of a COCO json target (default: the "
                                        "json's directory)")
    p.add_argument("--config-file", help="check every dataset this config names, with the "
                                         "roles and IMAGE_SCORE.ON_BAD_IMAGE training would use")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE overrides of --config-file (last on the command line)")
    p.add_argument("--split", action="append",
                   help="split of a VOC directory (repeatable; default: every split file)")
    p.add_argument("--classes", help="comma-separated classes of a VOC directory (default: its "
                                     "synthetic_meta.json classes, else the 20 VOC classes)")
    p.add_argument("--deep", action="store_true", help="decode every image fully")
    p.add_argument("--as-test", action="store_true",
                   help="check the named datasets / directories as test sets: every annotation "
                        "must also be read alike by Detectron2's VOC evaluator (parse_rec); "
                        "--config-file does so for its DATASETS.TEST")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes that read the files (default: one per CPU, %(default)s)")
    p.add_argument("--limit", type=int, default=20, help="findings printed per dataset")
    p.add_argument("--json", help="also write every finding to this JSON file")
    args = p.parse_args(argv)
    args.policy = None
    if not args.targets and not args.config_file:
        p.error("name a dataset, a VOC directory, or --config-file")
    try:
        targets = _targets(args)
    except Exception as e:  # noqa: BLE001 - CannotCheck, a config that cannot load: exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    total_images = total_findings = 0
    stops = []
    dump = []
    for label, role, run in targets:
        report = run()
        total_images += report.num_images
        total_findings += sum(f.kind not in NOTE_KINDS for f in report.findings)
        mode = "full decode" if args.deep else "header reads"
        print(f"{label}: {report.num_images} images, {report.num_objects} objects, "
              f"{len(report.findings)} problem(s) ({report.seconds:.2f} s, {mode})")
        if report.findings:
            print(format_findings(report.findings, args.limit))
        if report.unknown_classes:
            print(f"  classes not in the class list: {report.unknown_classes}")
        if role is not None and report.findings:
            from imagescore_det.engine.data_checks import classify

            actions = [classify(f, role, args.policy) for f in report.findings]
            what = {a: actions.count(a) for a in ("error", "skip", "warning") if a in actions}
            print(f"  at trainer start: {what} (error = stops the run; skip = left out of the "
                  f"rounds, IMAGE_SCORE.ON_BAD_IMAGE {args.policy}; warning = logged)")
            stops += [a for a in actions if a == "error"]
        dump.append({"dataset": label, "role": role, **{k: v for k, v in
                     dataclasses.asdict(report).items() if k != "findings"},
                     "findings": [dict(dataclasses.asdict(f), fix=f.fix) for f in report.findings]})
    seconds = time.perf_counter() - t0
    rate = total_images / seconds if seconds > 0 else float("inf")
    print(f"Checked {len(targets)} dataset(s), {total_images} images in {seconds:.1f} s "
          f"({rate:.0f} images/s): {total_findings} problem(s)"
          + (f"; training would stop on {len(stops)}" if args.config_file else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": seconds, "deep": args.deep, "datasets": dump}, f, indent=1)
    return 1 if total_findings else 0


if __name__ == "__main__":
    sys.exit(main())
