"""Structure checks of a pseudo-label dataset file (``pseudo_dataset.json``) before it is
trained on: a hand-edited or damaged file stops with the entry, the key and the fix instead
of failing deep inside a data loader worker (or, worse, training on a wrong box).

No Detectron2 import: plain JSON in, an exception out.
"""
import math
import numbers

# Detectron2's BoxMode values (structures/boxes.py); pseudo boxes are XYXY_ABS (0)
BOX_MODES = {0, 1, 2, 3, 4}
BOX_TOLERANCE = 1.0  # pixels a predicted box may stick out of its image


class PseudoDatasetError(RuntimeError):
    """A pseudo-label dataset file that must not be trained on."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range (JSON allows any)
        return False


def check_pseudo_data(data, path, num_classes=None, fix="Delete its round folder to recompute "
                      "the selection (--resume recomputes it)."):
    """Raise :class:`PseudoDatasetError` unless ``data`` (the parsed file) is a well-formed
    pseudo dataset: a ``dataset_dicts`` list of images with ``file_name``, ``image_id``,
    positive ``height``/``width`` when present, and ``annotations`` whose ``bbox`` is 4 finite numbers inside the
    image, ``bbox_mode`` a Detectron2 BoxMode, ``category_id`` in ``[0, num_classes)``
    (when given) and ``score`` in [0, 1]."""
    def fail(what):
        raise PseudoDatasetError(f"{path}: {what}. The file is damaged or was edited. {fix}")

    dicts = data.get("dataset_dicts")
    if not isinstance(dicts, list):
        fail(f"'dataset_dicts' is {type(dicts).__name__ if 'dataset_dicts' in data else 'missing'}"
             ", expected a list of images")
    for i, image in enumerate(dicts):
        if not isinstance(image, dict):
            fail(f"dataset_dicts[{i}] is a {type(image).__name__}, expected an object")
        name = image.get("file_name")
        where = f"dataset_dicts[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(name, str) or not name:
            fail(f"{where} has no 'file_name'" if name is None else
                 f"{where}: 'file_name' is {name!r}, expected a path")
        if "image_id" not in image:
            fail(f"{where} has no 'image_id'")
        size = {}
        for key in ("height", "width"):  # optional in Detectron2's format; checked if there
            value = image.get(key)
            if key in image and (not _is_int(value) or value <= 0):
                fail(f"{where}: '{key}' is {value!r}, expected a positive integer")
            size[key] = value if key in image else math.inf
        annotations = image.get("annotations")
        if not isinstance(annotations, list):
            fail(f"{where}: 'annotations' is {type(annotations).__name__ if 'annotations' in image else 'missing'}"
                 ", expected a list")
        for j, ann in enumerate(annotations):
            at = f"{where} annotation {j}"
            if not isinstance(ann, dict):
                fail(f"{at} is a {type(ann).__name__}, expected an object")
            box = ann.get("bbox")
            if not isinstance(box, list) or len(box) != 4:
                count = f"has {len(box)} numbers" if isinstance(box, list) else "is not a list"
                fail(f"{at}: bbox {box!r} {count}, expected 4 (x1, y1, x2, y2)")
            if not all(_is_number(v) for v in box):
                fail(f"{at}: bbox {box!r} holds something other than finite numbers")
            mode = ann.get("bbox_mode")
            if not _is_int(mode) or mode not in BOX_MODES:
                fail(f"{at}: bbox_mode {mode!r} is not a Detectron2 BoxMode (0-4)")
            if mode == 0:  # XYXY_ABS, what pseudo-labels are
                x1, y1, x2, y2 = box
                t = BOX_TOLERANCE
                if not (-t <= x1 <= x2 <= size["width"] + t and -t <= y1 <= y2 <= size["height"] + t):
                    fail(f"{at}: bbox {box} is not a box inside the image "
                         f"(x1 <= x2 <= width {size['width']}, y1 <= y2 <= height "
                         f"{size['height']})")
            category = ann.get("category_id")
            if not _is_int(category) or category < 0 or (
                    num_classes is not None and category >= num_classes):
                limit = f" [0, {num_classes})" if num_classes is not None else " >= 0"
                fail(f"{at}: category_id {category!r} is not a class index{limit}")
            if "score" in ann and not (_is_number(ann["score"]) and 0.0 <= ann["score"] <= 1.0):
                fail(f"{at}: score {ann['score']!r} is not a number in [0, 1]")
    return dicts
