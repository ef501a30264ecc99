"""Checks of a COCO instances json and of a folder of images (no Detectron2 import).

The same :class:`~imagescore_det.data.checks.Finding` per problem as the VOC checks, at
trainer start (``engine/data_checks.py``) and in ``tools/check_dataset.py``:

* a COCO json (``check_coco_json``): not COCO (``not_coco``), no images, image entries
  without id / file_name / size (``bad_image_entry``), ``duplicate_image_id``, every image
  file as :func:`~imagescore_det.data.checks.inspect_image` (missing, unreadable, empty, not
  an image, truncated, corrupt with ``deep``) and its size against the entry's
  (``size_mismatch``), annotations with an ``unknown_category``, of no image
  (``orphan_annotation``), with a ``bad_box``, a ``zero_size_box`` or a box outside the
  image (``box_outside_json_size``); ``iscrowd`` objects are counted in one note
  (``crowd_objects``: not trained on, ignored by COCOeval);
* a folder (``check_image_folder``): every image file as ``inspect_image``, byte-identical
  copies (``duplicate_image``, the later path), files without an image extension
  (``ignored_file`` notes: the loader does not read them), no image at all (``no_images``).

Notes (``NOTE_KINDS``) say how data is treated; they never stop a run.
"""
import collections
import functools
import hashlib
import math
import os
import time

from .checks import BOX_TOLERANCE, CheckReport, Finding, _order, _run, inspect_image
from .coco_format import DatasetConfigError, list_folder_images, read_coco_json

__all__ = ["check_coco_json", "check_image_folder"]


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_coco_image(json_file, image_root, categories, deep, entry):
    """(findings, objects, crowd objects) of one image entry and its annotations."""
    number, image, anns = entry
    file_name = os.path.join(image_root, str(image.get("file_name", "")))
    image_id = image.get("id")
    where = dict(listed_in=json_file, image_id=str(image_id), image=file_name)
    label = f"images[{number}] (id {image_id!r})"
    findings, crowd = [], 0
    width, height = image.get("width"), image.get("height")
    if not isinstance(image.get("file_name"), str) or not _number(width) or not _number(height):
        findings.append(Finding("bad_image_entry", json_file, (
            f"{label} needs a \"file_name\" and numeric \"width\"/\"height\"; it has "
            f"{ {k: image.get(k) for k in ('file_name', 'width', 'height')} }"), **where))
        width = height = None
    if isinstance(image.get("file_name"), str):
        size, problem = inspect_image(file_name, deep)
        if problem is not None:
            findings.append(Finding(problem[0], file_name, f"{problem[1]} ({label} of "
                                                          f"{json_file})", **where))
        elif size is not None and width is not None and tuple(size) != (width, height):
            findings.append(Finding("size_mismatch", json_file, (
                f"{label} says {width}x{height} (width x height) but {file_name} is "
                f"{size[0]}x{size[1]}"), **where))
    for a in anns:
        what = f"annotation id {a.get('id')!r} on {label}"
        if a.get("category_id") not in categories:
            findings.append(Finding("unknown_category", json_file, (
                f"{what} has category_id {a.get('category_id')!r}, not one of the "
                f"\"categories\" ids {sorted(categories)}"), **where))
        if a.get("iscrowd"):
            crowd += 1
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
            findings.append(Finding("bad_box", json_file, f"{what} has bbox {box!r}", **where))
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            findings.append(Finding("zero_size_box", json_file, (
                f"{what} has bbox {box} [x, y, width, height]: width {w:g}, height {h:g}"),
                **where))
        elif width is not None and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE
                                    or x + w > width + BOX_TOLERANCE
                                    or y + h > height + BOX_TOLERANCE):
            findings.append(Finding("box_outside_json_size", json_file, (
                f"{what} has bbox {box} [x, y, width, height] outside the {width}x{height} "
                "image"), **where))
    return findings, len(anns), crowd


def check_coco_json(json_file, image_root, dataset=None, deep=False, workers=None, shard=None):
    """Check a COCO instances json and the images it lists under ``image_root`` (see the
    module docstring). Returns a :class:`CheckReport`; never raises on bad data."""
    t0 = time.perf_counter()
    rank, world = shard or (0, 1)
    report = CheckReport(dataset=dataset or json_file, root=image_root, deep=deep)
    try:
        data = read_coco_json(json_file)
    except DatasetConfigError as e:
        report.findings = [Finding("not_coco", json_file, str(e))] if rank == 0 else []
        report.seconds = time.perf_counter() - t0
        return report
    images = data["images"]
    categories = {c["id"] for c in data["categories"]}
    findings = []
    by_image, first = collections.defaultdict(list), {}
    for number, image in enumerate(images):
        key = image.get("id") if isinstance(image, dict) else None
        if not isinstance(key, int) or isinstance(key, bool):
            findings.append(Finding("bad_image_entry", json_file, (
                f"images[{number}] has id {key!r}; image ids are ints"), json_file))
        elif key in first:
            findings.append(Finding("duplicate_image_id", json_file, (
                f"images[{number}] ({image.get('file_name')!r}) has id {key}, as images"
                f"[{first[key]}] ({images[first[key]].get('file_name')!r})"), json_file,
                image_id=str(key), image=os.path.join(image_root, str(image.get("file_name")))))
        else:
            first[key] = number
    orphans = 0
    for a in data["annotations"]:
        image_id = a.get("image_id") if isinstance(a, dict) else None
        if image_id in first:
            by_image[image_id].append(a)
        else:
            orphans += 1
            if orphans <= 3:
                findings.append(Finding("orphan_annotation", json_file, (
                    f"annotation id {a.get('id') if isinstance(a, dict) else a!r} has image_id "
                    f"{image_id!r}, which no entry of \"images\" has"), json_file))
    if orphans > 3:
        findings.append(Finding("orphan_annotation", json_file, f"... {orphans} such "
                                                                "annotations in all", json_file))
    if not images:
        findings.append(Finding("no_images", json_file, "its \"images\" list is empty"))
    entries = [(n, im, by_image.get(im.get("id"), []) if first.get(im.get("id")) == n else [])
               for n, im in enumerate(images) if isinstance(im, dict)]
    mine = entries[rank::world]
    report.num_images, report.num_checked = len(images), len(mine)
    results = _run(functools.partial(_check_coco_image, json_file, image_root, categories, deep),
                   mine, workers)
    report.findings = (findings if rank == 0 else []) + [f for r in results for f in r[0]]
    report.num_objects = sum(r[1] for r in results)
    crowd = sum(r[2] for r in results)
    if crowd:
        report.findings.append(Finding("crowd_objects", json_file, (
            f"{crowd} annotation(s) have iscrowd 1: not trained on, and COCOeval ignores "
            "detections matched to them")))
    report.findings.sort(key=_order)
    report.seconds = time.perf_counter() - t0
    return report


def _digest(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _duplicates(paths):
    """``[(later path, first path)]`` of byte-identical files (only same-size files are read)."""
    by_size = collections.defaultdict(list)
    for p in paths:
        try:
            by_size[os.path.getsize(p)].append(p)
        except OSError:
            continue
    out = []
    for size, group in by_size.items():
        if len(group) < 2 or size == 0:
            continue
        seen = {}
        for p in group:
            digest = _digest(p)
            if digest is None:
                continue
            if digest in seen:
                out.append((p, seen[digest]))
            else:
                seen[digest] = p
    return out


def _check_folder_image(directory, deep, path):
    size, problem = inspect_image(path, deep)
    if problem is None:
        return []
    return [Finding(problem[0], path, problem[1], image=path,
                    image_id=os.path.relpath(path, directory).replace(os.sep, "/"))]


def check_image_folder(directory, dataset=None, deep=False, workers=None, shard=None):
    """Check every image under ``directory`` (see the module docstring)."""
    t0 = time.perf_counter()
    rank, world = shard or (0, 1)
    report = CheckReport(dataset=dataset or directory, root=directory, deep=deep)
    if not os.path.isdir(directory):
        report.findings = ([Finding("missing_directory", directory, "the image folder does not "
                                                                    "exist")] if rank == 0 else [])
        return report
    images, others = list_folder_images(directory)
    findings = []
    if rank == 0:
        if not images:
            findings.append(Finding("no_images", directory, "holds no image files (looked "
                                                            "recursively)"))
        findings += [Finding("ignored_file", p, "has no image extension; not read") for p in others]
        findings += [Finding("duplicate_image", later, f"has the same bytes as {first}",
                             image=later, image_id=os.path.relpath(later, directory))
                     for later, first in _duplicates(images)]
    mine = images[rank::world]
    report.num_images, report.num_checked = len(images), len(mine)
    results = _run(functools.partial(_check_folder_image, directory, deep), mine, workers)
    report.findings = findings + [f for r in results for f in r]
    report.findings.sort(key=_order)
    report.seconds = time.perf_counter() - t0
    return report
