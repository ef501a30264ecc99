"""Reading COCO instances json files and image folders, without Detectron2 (the checks and
the tools use it too); registration is in :mod:`imagescore_det.data.coco`."""
import json
import os

CONFIG_KEY = "DATASETS.REGISTER"
# what PIL (Detectron2's read_image) decodes; matched case-insensitively
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class DatasetConfigError(ValueError):
    """A dataset entry or file that cannot be registered; the message says how to fix it."""


def read_coco_json(json_file):
    """The parsed json, checked to be a COCO instances file (a dict with ``images``,
    ``annotations`` and ``categories`` lists, every category with an int ``id`` and a
    ``name``); :class:`DatasetConfigError` naming the file otherwise."""
    fix = ("A COCO instances json is an object with \"images\", \"annotations\" and "
           "\"categories\" lists (what CVAT, Label Studio and most labeling tools export as "
           "'COCO 1.0' / 'COCO'); export it again in that format or fix the path.")
    if not os.path.isfile(json_file):
        raise DatasetConfigError(f"COCO json {json_file} does not exist. Fix the path in "
                                 f"{CONFIG_KEY} (relative paths are relative to "
                                 "$DETECTRON2_DATASETS, default ./datasets).")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetConfigError(f"{json_file} is not a readable JSON file ({e}). {fix}") from e
    if not isinstance(data, dict):
        raise DatasetConfigError(f"{json_file} is not COCO: its top level is a "
                                 f"{type(data).__name__}, not an object. {fix}")
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetConfigError(f"{json_file} is not COCO: it has no {' / '.join(missing)} "
                                 f"list (keys found: {sorted(data)[:10]}). {fix}")
    if not data["categories"]:
        raise DatasetConfigError(f"{json_file} has an empty \"categories\" list: the classes "
                                 f"are unknown. {fix}")
    for k, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and isinstance(c.get("id"), int)
                and isinstance(c.get("name"), str)):
            raise DatasetConfigError(f"{json_file}: category #{k + 1} {c!r} lacks an int \"id\" "
                                     f"or a string \"name\". {fix}")
    ids = [c["id"] for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise DatasetConfigError(f"{json_file}: category ids repeat ({sorted(ids)}); give each "
                                 "category its own id.")
    return data


def list_folder_images(directory):
    """Every file under ``directory`` (recursively) with an image extension, sorted; and the
    other files (``(images, others)``, absolute paths)."""
    images, others = [], []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            (images if f.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    return sorted(images), sorted(others)
