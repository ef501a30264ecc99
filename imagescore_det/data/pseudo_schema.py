"""The shape a pseudo-label dataset file must have to be registered and trained on.

:func:`checked_pseudo_dicts` is what ``data.pseudo.load_pseudo_dataset`` runs on the file's
``dataset_dicts``: every problem raises ``RuntimeError`` naming the file, the entry and the
key (a KeyError or TypeError deep in Detectron2's data loader, hours later, would name none).
No Detectron2 import: ``bbox_mode`` is converted by the caller.
"""
import math

FIX = "Delete its round folder to recompute the selection."
BOX_MODES = (0, 1, 2, 3, 4)  # detectron2.structures.BoxMode values


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range (JSON allows any)
        return False


def _int(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def checked_pseudo_dicts(dicts, path):
    """``dicts`` (the file's ``dataset_dicts``) if every entry is a dataset dict Detectron2
    can train on: ``file_name`` a non-empty string; ``height``/``width``, when present,
    positive integers; ``annotations`` a list of objects with ``bbox`` (4 finite numbers),
    ``bbox_mode`` (0-4) and ``category_id`` (an integer >= 0), ``score`` a finite number when
    present. Else ``RuntimeError`` naming ``path``, the entry and the key."""

    def fail(where, what):
        raise RuntimeError(f"The pseudo-label dataset {path} is damaged: {where} {what}. {FIX}")

    if not isinstance(dicts, list):
        fail("dataset_dicts", "is missing or not a list")
    for i, d in enumerate(dicts):
        where = f"dataset_dicts[{i}]"
        if not isinstance(d, dict):
            fail(where, "is not an object")
        if not isinstance(d.get("file_name"), str) or not d["file_name"]:
            fail(f"{where}.file_name", "is missing or not a non-empty string")
        for key in ("height", "width"):
            if key in d and not _int(d[key], 1):
                fail(f"{where}.{key}", f"is {d[key]!r}, not a positive integer")
        annotations = d.get("annotations")
        if not isinstance(annotations, list):
            fail(f"{where}.annotations", "is missing or not a list")
        for j, a in enumerate(annotations):
            at = f"{where}.annotations[{j}]"
            if not isinstance(a, dict):
                fail(at, "is not an object")
            box = a.get("bbox")
            if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
                fail(f"{at}.bbox", f"is {box!r}, not 4 finite numbers")
            if not _int(a.get("bbox_mode"), 0) or a["bbox_mode"] not in BOX_MODES:
                fail(f"{at}.bbox_mode", f"is {a.get('bbox_mode')!r}, not one of {BOX_MODES}")
            if not _int(a.get("category_id"), 0):
                fail(f"{at}.category_id", f"is {a.get('category_id')!r}, not an integer >= 0")
            if "score" in a and not _number(a["score"]):
                fail(f"{at}.score", f"is {a['score']!r}, not a finite number")
    return dicts
