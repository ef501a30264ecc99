"""Your own data without Python: COCO json datasets, folders of images, VOC roots from the config.

``DATASETS.REGISTER`` (imagescore_det/config.py) lists datasets as ``(name, kind, path...)``
entries; :func:`register_config_datasets` registers them in Detectron2's catalogs when the
config is loaded (``engine.config_loading.load_config``), before anything uses them:

* ``(name, "coco", json_file, image_root)``: a COCO instances json (what labeling tools
  export) through Detectron2's ``register_coco_instances`` (metadata ``json_file``,
  ``image_root``, ``evaluator_type="coco"``). Its ``thing_classes`` and
  ``thing_dataset_id_to_contiguous_id`` are read from the json's ``categories`` at
  registration, exactly as ``load_coco_json`` sets them, so the class checks run before
  training. The loader is ``load_coco_json`` with every box converted to XYXY_ABS (the
  convention of the rest of the project).
* ``(name, "folder", directory)``: every image under ``directory`` (recursively; the
  extensions of :data:`IMAGE_EXTENSIONS`, which Detectron2's reader decodes) as an unlabeled
  pool without annotations, sorted by path; ``image_id`` is the path relative to
  ``directory``. Its ``thing_classes`` are those of the run's labeled data (DATASETS.TRAIN).
* ``(name, "voc", directory, split[, "class1,class2,..."])``: a Pascal VOC root through
  :func:`~imagescore_det.data.voc.register_voc` (classes: the given ones, else the
  directory's ``synthetic_meta.json`` classes, else the 20 VOC classes).

Relative paths are relative to ``$DETECTRON2_DATASETS`` (default ``datasets``), as for the
builtin datasets. Errors (:class:`DatasetConfigError`) name the entry or file and the fix.
"""
import logging
import os
import threading

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.structures import BoxMode

from .coco_format import (CONFIG_KEY, IMAGE_EXTENSIONS, DatasetConfigError, list_folder_images,
                          read_coco_json)

logger = logging.getLogger(__name__)

__all__ = ["DatasetConfigError", "IMAGE_EXTENSIONS", "KINDS", "read_coco_categories",
           "register_coco", "register_folder", "list_folder_images", "load_folder_dicts",
           "register_config_datasets", "check_class_agreement"]

KINDS = ("coco", "folder", "voc")

# name -> (kind, normalized paths...) of what this module registered
_REGISTERED = {}
_LOCK = threading.Lock()


# --------------------------------------------------------------------------- COCO json
def read_coco_categories(json_file):
    """``(thing_classes, {dataset category id: contiguous id})`` as ``load_coco_json`` derives
    them (categories sorted by id)."""
    cats = sorted(read_coco_json(json_file)["categories"], key=lambda c: c["id"])
    return [c["name"] for c in cats], {c["id"]: i for i, c in enumerate(cats)}


def _xyxy(dicts):
    for d in dicts:
        for ann in d.get("annotations", ()):
            ann["bbox"] = [float(v) for v in BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"],
                                                              BoxMode.XYXY_ABS)]
            ann["bbox_mode"] = BoxMode.XYXY_ABS
    return dicts


def register_coco(name, json_file, image_root):
    """Register a COCO instances json as dataset ``name`` (``register_coco_instances``, its
    classes read now, boxes loaded as XYXY_ABS)."""
    classes, id_map = read_coco_categories(json_file)
    register_coco_instances(name, {}, json_file, image_root)
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _xyxy(load_coco_json(json_file, image_root, name)))
    MetadataCatalog.get(name).set(thing_classes=classes, thing_dataset_id_to_contiguous_id=id_map)


# --------------------------------------------------------------------------- folders
def _no_images_error(directory):
    return DatasetConfigError(
        f"Image folder {directory} holds no images (looked recursively for "
        f"{', '.join(IMAGE_EXTENSIONS)}). Put the unlabeled images there or fix the path in "
        f"{CONFIG_KEY}.")


def load_folder_dicts(directory):
    """One dataset dict per image under ``directory``: ``file_name``, ``image_id`` (the path
    relative to ``directory``) and, when its header reads, ``height``/``width`` (as Detectron2
    reads it, after EXIF orientation). No ``annotations``: the pool has no truth. Unreadable
    images stay in (without a size) for the data check to report or skip."""
    from .checks import inspect_image

    if not os.path.isdir(directory):
        raise DatasetConfigError(f"Image folder {directory} does not exist. Fix the path in "
                                 f"{CONFIG_KEY} (relative paths are relative to "
                                 "$DETECTRON2_DATASETS, default ./datasets).")
    images, _ = list_folder_images(directory)
    if not images:
        raise _no_images_error(directory)
    dicts = []
    for path in images:
        d = {"file_name": path, "image_id": os.path.relpath(path, directory).replace(os.sep, "/")}
        size, problem = inspect_image(path)
        if size is not None and problem is None:
            d["width"], d["height"] = int(size[0]), int(size[1])
        dicts.append(d)
    return dicts


def register_folder(name, directory, class_names):
    """Register the images under ``directory`` as the unlabeled dataset ``name``."""
    if not os.path.isdir(directory):
        raise DatasetConfigError(f"Image folder {directory} (dataset {name!r}) does not exist. "
                                 f"Fix the path in {CONFIG_KEY}.")
    if not list_folder_images(directory)[0]:
        raise _no_images_error(directory)
    DatasetCatalog.register(name, lambda: load_folder_dicts(directory))
    MetadataCatalog.get(name).set(thing_classes=list(class_names), image_root=directory,
                                  evaluator_type="unlabeled_folder", unlabeled_folder=True)


# --------------------------------------------------------------------------- the config
def _resolve(path):
    from . import datasets_root

    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(datasets_root(), path)


def _parse_entries(entries):
    """``[(name, kind, [paths...], extra)]`` from ``DATASETS.REGISTER``, validated."""
    out, seen = [], {}
    usage = ("Write each entry as (name, \"coco\", json_file, image_root), (name, \"folder\", "
             "directory) or (name, \"voc\", directory, split[, \"class1,class2\"]).")
    for k, entry in enumerate(entries, 1):
        if isinstance(entry, str) or not all(isinstance(v, str) for v in entry) or len(entry) < 3:
            raise DatasetConfigError(f"{CONFIG_KEY} entry #{k} {entry!r} is not a (name, kind, "
                                     f"path, ...) list of strings. {usage}")
        name, kind, *rest = entry
        if kind not in KINDS:
            raise DatasetConfigError(f"{CONFIG_KEY} entry #{k} ({name!r}) has kind {kind!r}; use "
                                     f"one of {', '.join(KINDS)}. {usage}")
        want = {"coco": (2, 2), "folder": (1, 1), "voc": (2, 3)}[kind]
        if not want[0] <= len(rest) <= want[1]:
            raise DatasetConfigError(f"{CONFIG_KEY} entry #{k} ({name!r}, {kind}) has "
                                     f"{len(rest)} path field(s). {usage}")
        if name in seen:
            raise DatasetConfigError(f"Dataset name {name!r} is defined twice in {CONFIG_KEY} "
                                     f"(entries #{seen[name]} and #{k}); give each entry its own "
                                     "name.")
        seen[name] = k
        if kind == "voc":
            out.append((name, kind, (_resolve(rest[0]), rest[1]),
                        rest[2] if len(rest) > 2 else ""))
        else:
            out.append((name, kind, tuple(_resolve(p) for p in rest), ""))
    return out


def _voc_classes(directory, given):
    if given:
        return [c.strip() for c in given.split(",") if c.strip()]
    from .synthetic import read_synthetic_meta
    from .voc import VOC_CLASS_NAMES

    meta = read_synthetic_meta(directory) if os.path.isdir(directory) else None
    if meta is not None and meta.get("classes"):
        return list(meta["classes"])
    return list(VOC_CLASS_NAMES)


def _claim(name, key):
    """True when ``name`` must be (re-)registered for ``key``; False when it already is."""
    if _REGISTERED.get(name) == key:
        return False
    if name in DatasetCatalog.list():
        if name not in _REGISTERED:
            raise DatasetConfigError(
                f"Dataset name {name!r} in {CONFIG_KEY} is already registered (a builtin or "
                "project dataset, or one registered by your code); pick another name.")
        # registered by an earlier config of this process with other paths: this config wins
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    return True


def register_config_datasets(cfg):
    """Register the datasets of ``cfg.DATASETS.REGISTER`` (idempotent for the same entries)
    and give the folder datasets the classes of the run's labeled data. Returns the names."""
    entries = _parse_entries(cfg.DATASETS.REGISTER)
    folders = []
    with _LOCK:
        for name, kind, paths, extra in entries:
            if kind == "folder":
                folders.append((name, paths))
                continue
            key = (kind, paths, extra)
            if not _claim(name, key):
                continue
            if kind == "coco":
                register_coco(name, *paths)
            else:
                from .voc import register_voc

                register_voc(name, paths[0], paths[1], 2007, _voc_classes(paths[0], extra),
                             replace=True)
            _REGISTERED[name] = key
        if folders:
            classes = _labeled_classes(cfg, {n for n, _ in folders})
            for name, paths in folders:
                key = ("folder", paths, tuple(classes))
                if _claim(name, key):
                    register_folder(name, paths[0], classes)
                    _REGISTERED[name] = key
    return [e[0] for e in entries]


def _labeled_classes(cfg, folder_names):
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.IMAGE_SCORE.LABELED_DATASETS):
        if name in folder_names:
            raise DatasetConfigError(
                f"Dataset {name!r} is a folder of images without annotations, but the config "
                "names it as labeled data (DATASETS.TRAIN / IMAGE_SCORE.LABELED_DATASETS). Put "
                "it in IMAGE_SCORE.UNLABELED_DATASETS, and train on a labeled coco or voc "
                "dataset.")
        if name in DatasetCatalog.list():
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None:
                return list(classes)
    raise DatasetConfigError(
        f"The folder dataset(s) {sorted(folder_names)} in {CONFIG_KEY} take their classes from "
        "the labeled data, but no registered DATASETS.TRAIN dataset has a class list. Name "
        "the labeled coco/voc dataset in DATASETS.TRAIN.")


def check_class_agreement(names, where="the config"):
    """Every dataset of ``names`` that has ``thing_classes`` must have the same list."""
    lists = {}
    for name in dict.fromkeys(names):
        if name not in DatasetCatalog.list():
            continue
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None:
            lists[name] = list(classes)
    if len({tuple(v) for v in lists.values()}) <= 1:
        return
    (first, reference), *others = lists.items()
    for name, classes in others:
        if classes != reference:
            only_first = [c for c in reference if c not in classes]
            only_other = [c for c in classes if c not in reference]
            detail = (f"{first!r} alone has {only_first}, {name!r} alone has {only_other}"
                      if only_first or only_other else "the same classes in another order "
                      "(the order decides the class ids)")
            raise DatasetConfigError(
                f"The datasets of {where} disagree on their classes: {first!r} has "
                f"{len(reference)} classes {reference}, {name!r} has {len(classes)} classes "
                f"{classes} ({detail}). All datasets of a run must "
                "have one class list: fix the categories of the json / the VOC class list, "
                "or leave the dataset out.")


# --------------------------------------------------------------------------- writing COCO
def coco_category_list(class_names, id_map=None):
    """``categories`` of a COCO json: ids ``1..K`` (or those of ``id_map``, {id: contiguous})."""
    ids = {i: i + 1 for i in range(len(class_names))}
    if id_map:
        ids = {contiguous: dataset_id for dataset_id, contiguous in id_map.items()}
    return [{"id": int(ids[i]), "name": name, "supercategory": ""}
            for i, name in enumerate(class_names)]


def dicts_to_coco(dicts, class_names, image_root, id_map=None, keep_scores=False):
    """A COCO instances json (a dict) of Detectron2 dataset dicts with XYXY_ABS boxes:
    ``file_name`` relative to ``image_root``, integer image ids ``1..N`` in dict order (the
    dict's own ``image_id`` is kept as ``original_id``), boxes as COCO's ``[x, y, w, h]``
    with ``area`` = w * h, category ids ``1..K`` or those of ``id_map`` ({dataset id:
    contiguous id}, the metadata's ``thing_dataset_id_to_contiguous_id``); with
    ``keep_scores`` each annotation keeps its ``score``."""
    categories = coco_category_list(class_names, id_map)
    to_dataset = [c["id"] for c in categories]
    images, annotations = [], []
    for number, d in enumerate(dicts, 1):
        image = {"id": number, "file_name": os.path.relpath(d["file_name"], image_root)
                 .replace(os.sep, "/"), "original_id": str(d.get("image_id", ""))}
        if "width" in d and "height" in d:
            image["width"], image["height"] = int(d["width"]), int(d["height"])
        images.append(image)
        for ann in d.get("annotations", ()):
            x0, y0, x1, y1 = BoxMode.convert(list(map(float, ann["bbox"])),
                                             ann.get("bbox_mode", BoxMode.XYXY_ABS),
                                             BoxMode.XYXY_ABS)
            w, h = x1 - x0, y1 - y0
            out = {"id": len(annotations) + 1, "image_id": number,
                   "category_id": to_dataset[int(ann["category_id"])],
                   "bbox": [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)],
                   "area": round(w * h, 2), "iscrowd": int(ann.get("iscrowd", 0))}
            if keep_scores and "score" in ann:
                out["score"] = float(ann["score"])
            annotations.append(out)
    return {"images": images, "annotations": annotations, "categories": categories}
