#!/usr/bin/env python
"""A selection round's pseudo-labels as a COCO json, for review in a labeling tool and back.

    python tools/export_pseudo_labels.py output/custom/imagescore                # the last round
    python tools/export_pseudo_labels.py RUN --round 2 --output review.json \\
        --image-root datasets/mine/unlabeled --categories-from datasets/mine/train.json

Writes the round's pseudo-labeled images (``OUTPUT_DIR/image_score/round_<k>/
pseudo_dataset.json``: the images the detector trained on, with their kept boxes) as a COCO
instances json (default ``<round folder>/pseudo_labels_coco.json``): ``file_name`` relative
to ``--image-root`` (default: the folder that holds all of them), image width/height, boxes
as ``[x, y, w, h]`` with ``area``, each box's detector ``score`` kept. The category names and
ids are those of the labeled set: of ``--categories-from`` (a COCO json), else of the run's
labeled COCO dataset (DATASETS.TRAIN[0] in ``OUTPUT_DIR/config.yaml``, when it was
registered with DATASETS.REGISTER), else 1..K in class order.

CVAT ("COCO 1.0") and Label Studio import it; after review, the exported json is labeled
data: add ``(name, "coco", reviewed.json, image_root)`` to DATASETS.REGISTER and name it in
DATASETS.TRAIN (README "Your own data").
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OUTPUT_NAME = "pseudo_labels_coco.json"


class ExportError(ValueError):
    """A round or an option that cannot be exported; the message says how to fix it."""


def rounds_of(output_dir):
    folder = os.path.join(output_dir, "image_score")
    found = [int(m.group(1)) for m in (re.fullmatch(r"round_(\d+)", f) for f in
                                        (os.listdir(folder) if os.path.isdir(folder) else []))
             if m]
    return sorted(found)


def _config_categories(output_dir, class_names):
    """The categories of the run's labeled COCO json (from its config.yaml), or None."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml

    from imagescore_det.data import datasets_root

    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    datasets = cfg.get("DATASETS", {})
    train = list(datasets.get("TRAIN") or [])
    for entry in datasets.get("REGISTER") or []:
        if train and entry[0] == train[0] and entry[1] == "coco":
            json_file = os.path.join(datasets_root(), os.path.expanduser(entry[2]))
            return _json_categories(json_file, class_names)
    return None


def _json_categories(json_file, class_names):
    from imagescore_det.data.coco_format import read_coco_json

    try:
        cats = sorted(read_coco_json(json_file)["categories"], key=lambda c: c["id"])
    except ValueError as e:
        raise ExportError(str(e)) from None
    names = [c["name"] for c in cats]
    if names != list(class_names):
        raise ExportError(f"The categories of {json_file} ({names}) are not the round's classes "
                          f"{list(class_names)}; pass the labeled set's json to "
                          "--categories-from.")
    return {c["id"]: i for i, c in enumerate(cats)}


def export_round(output_dir, round_index=None, output=None, image_root=None,
                 categories_from=None):
    """Write the COCO json; returns ``(path, the json as a dict)``."""
    from imagescore_det.data.coco import dicts_to_coco
    from imagescore_det.engine.round_files import RoundError, read_manifest, read_pseudo_dicts
    from imagescore_det.engine.round_files import round_dir
    from imagescore_det.utils import atomic_write_json

    found = rounds_of(output_dir)
    if round_index is None:
        if not found:
            raise ExportError(f"{output_dir} has no selection round (no "
                              f"{os.path.join(output_dir, 'image_score', 'round_<k>')}): pass "
                              "the OUTPUT_DIR of an IMAGE_SCORE.ENABLED run that reached "
                              "IMAGE_SCORE.START_ITER.")
        round_index = found[-1]
    directory = round_dir(output_dir, round_index)
    if round_index not in found:
        raise ExportError(f"Round {round_index} does not exist: {directory} is missing. Rounds "
                          f"of {output_dir}: {found or 'none'}; pass one of them to --round.")
    try:
        manifest = read_manifest(directory)
        if manifest is None:
            raise ExportError(f"Round {round_index} is incomplete ({directory} has no "
                              "selection.json): finish the run with --resume, or export "
                              "another round.")
        dicts = read_pseudo_dicts(directory, manifest)
    except RoundError as e:
        raise ExportError(str(e)) from None
    if not dicts:
        raise ExportError(f"Round {round_index} of {output_dir} kept no pseudo-labeled image "
                          "(every selected image had fewer than IMAGE_SCORE.MIN_BOXES_PER_IMAGE "
                          "boxes): nothing to export.")
    classes = manifest.thing_classes
    id_map = (_json_categories(categories_from, classes) if categories_from
              else _config_categories(output_dir, classes))
    if image_root is None:
        image_root = os.path.commonpath([os.path.dirname(os.path.abspath(d["file_name"]))
                                         for d in dicts])
    data = dicts_to_coco(dicts, classes, image_root, id_map=id_map, keep_scores=True)
    data["info"] = {"description": f"imagescore-det pseudo-labels, round {round_index} of "
                                   f"{output_dir} ({manifest.selector})",
                    "image_root": os.path.abspath(image_root)}
    output = output or os.path.join(directory, OUTPUT_NAME)
    atomic_write_json(output, data)
    return output, data


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("output_dir", help="the run's OUTPUT_DIR")
    p.add_argument("--round", type=int, default=None, help="round number (default: the last)")
    p.add_argument("--output", help=f"the json to write (default: <round folder>/{OUTPUT_NAME})")
    p.add_argument("--image-root", help="file names are relative to it (default: the folder "
                                        "that holds every pseudo-labeled image)")
    p.add_argument("--categories-from", help="a COCO json whose category ids to use (the "
                                             "labeled set's)")
    args = p.parse_args(argv)
    try:
        path, data = export_round(args.output_dir, args.round, args.output, args.image_root,
                                  args.categories_from)
    except ExportError as e:
        sys.exit(f"error: {e}")
    print(f"Wrote {len(data['images'])} images, {len(data['annotations'])} pseudo boxes "
          f"(scores kept) to {path}; file names relative to {data['info']['image_root']}")
    return path


if __name__ == "__main__":
    main()
