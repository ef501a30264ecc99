"""A deterministic synthetic object-detection dataset in Pascal VOC format.

``generate_synthetic_voc(root)`` writes exactly the layout Detectron2's
``register_pascal_voc`` / ``load_voc_instances`` reads::

    <root>/VOC2007/JPEGImages/<id>.jpg
    <root>/VOC2007/Annotations/<id>.xml          (VOC XML, 1-based inclusive pixel boxes)
    <root>/VOC2007/ImageSets/Main/labeled.txt    typical images, used for training
    <root>/VOC2007/ImageSets/Main/unlabeled.txt  the pool: typical + shifted images
    <root>/VOC2007/ImageSets/Main/test.txt       typical images, evaluation only
    <root>/VOC2007/ImageSets/Main/trainval.txt   labeled + unlabeled (everything but test)
    <root>/VOC2007/synthetic_meta.json           classes, seed, parameters, per-id domain

Every image shows 1-4 filled shapes whose *class is the shape* (``SYNTHETIC_CLASSES``);
colour, texture, outline, size, aspect and rotation are random, so a detector has to learn
shape. Backgrounds are cluttered (gradients, low-frequency noise, lines, arcs, soft blobs
and dots that are not objects). Image sizes vary (default 112-176 px per side) so that
padding and resizing matter.

The unlabeled pool mixes two domains: ``typical`` images come from the same distribution as
labeled/test; ``shifted`` images (a ``shifted_fraction`` share) are low-contrast,
desaturated/tinted, much noisier, more cluttered, with semi-transparent objects and bars
occluding them. A detector trained on typical images is less precise there. The pool's
annotations are written too (hidden truth for measuring pseudo-label precision; the
training code must never train on them).

Everything is a pure function of the parameters: the same seed gives byte-identical XML and
JPEG files (for a given OpenCV build). Generation is atomic (written to a temporary sibling
directory and ``os.replace``-d into place) and idempotent (an existing dataset with the same
parameters is left alone; one with other parameters is an error).
"""
import json
import os
import shutil
import tempfile
from xml.sax.saxutils import escape

import cv2
import numpy as np

from .synthetic_render import (MAX_OBJ_SIZE, MIN_OBJ_SIZE, SYNTHETIC_CLASSES,
                               render_synthetic_image)

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "META_FILENAME",
    "SPLITS",
    "generate_synthetic_voc",
    "render_synthetic_image",
    "read_synthetic_meta",
]


#: Bumped whenever the drawing code changes what a given seed produces; part of the
#: parameters, so a dataset made by another version is reported as a mismatch.
GENERATOR_VERSION = 1

#: Name of the metadata file inside ``<root>/VOC2007``.
META_FILENAME = "synthetic_meta.json"

#: Split files written to ``ImageSets/Main``.
SPLITS = ("labeled", "unlabeled", "test", "trainval")

_YEAR_DIR = "VOC2007"


# -------------------------------------------------------------------------------------------
# VOC writing
# -------------------------------------------------------------------------------------------
def _voc_xml(image_id, width, height, objects):
    """VOC XML text; boxes converted to VOC's 1-based inclusive pixel convention."""
    lines = [
        "<annotation>",
        f"\t<folder>{_YEAR_DIR}</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source>",
        "\t\t<database>imagescore-det synthetic shapes</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for cls, (x0, y0, x1, y1) in objects:
        lines += [
            "\t<object>",
            f"\t\t<name>{escape(cls)}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1 + 1}</xmax>",
            f"\t\t\t<ymax>{y1 + 1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def read_synthetic_meta(root):
    """The parsed ``synthetic_meta.json`` of a generated dataset, or None if there is none.

    ``root`` is the dataset root (the directory that contains ``VOC2007``) or the
    ``VOC2007`` directory itself.
    """
    for d in (os.path.join(root, _YEAR_DIR), root):
        p = os.path.join(d, META_FILENAME)
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as f:
                return json.load(f)
    return None


def _params(seed, num_labeled, num_unlabeled, num_test, min_size, max_size, shifted_fraction,
            min_obj_size, max_obj_size, max_objects, jpeg_quality):
    if not (0.0 <= shifted_fraction <= 1.0):
        raise ValueError(f"shifted_fraction must be in [0, 1], got {shifted_fraction}")
    if not (1 <= min_size <= max_size):
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if not (4 <= min_obj_size <= max_obj_size):
        raise ValueError(f"need 4 <= min_obj_size <= max_obj_size, got "
                         f"{min_obj_size}, {max_obj_size}")
    if min_obj_size > 0.6 * min_size - 2:
        raise ValueError(f"min_obj_size={min_obj_size} does not fit images of min_size="
                         f"{min_size} (need min_obj_size <= 0.6 * min_size - 2)")
    for k, v in (("num_labeled", num_labeled), ("num_unlabeled", num_unlabeled),
                 ("num_test", num_test), ("max_objects", max_objects)):
        if int(v) < 0 or (k == "max_objects" and int(v) < 1):
            raise ValueError(f"{k} must be >= {1 if k == 'max_objects' else 0}, got {v}")
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_labeled": int(num_labeled),
        "num_unlabeled": int(num_unlabeled),
        "num_test": int(num_test),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "shifted_fraction": float(shifted_fraction),
        "min_obj_size": int(min_obj_size),
        "max_obj_size": int(max_obj_size),
        "max_objects": int(max_objects),
        "jpeg_quality": int(jpeg_quality),
        "classes": list(SYNTHETIC_CLASSES),
    }


def _write_dataset(voc_dir, params):
    os.makedirs(os.path.join(voc_dir, "JPEGImages"))
    os.makedirs(os.path.join(voc_dir, "Annotations"))
    os.makedirs(os.path.join(voc_dir, "ImageSets", "Main"))
    seed = params["seed"]
    n_lab, n_unl, n_test = params["num_labeled"], params["num_unlabeled"], params["num_test"]
    ids = [f"{i:06d}" for i in range(n_lab + n_unl + n_test)]
    splits = {
        "labeled": ids[:n_lab],
        "unlabeled": ids[n_lab:n_lab + n_unl],
        "test": ids[n_lab + n_unl:],
    }
    splits["trainval"] = splits["labeled"] + splits["unlabeled"]
    # exactly round(fraction * n) shifted images, at seeded random positions of the pool
    n_shift = int(round(params["shifted_fraction"] * n_unl))
    perm = np.random.default_rng([seed, 1 << 30]).permutation(n_unl)
    shifted_ids = {splits["unlabeled"][int(i)] for i in perm[:n_shift]}
    domains = {i: ("shifted" if i in shifted_ids else "typical") for i in ids}

    n_objects = {c: 0 for c in SYNTHETIC_CLASSES}
    for idx, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, idx])
        w = int(rng.integers(params["min_size"], params["max_size"] + 1))
        h = int(rng.integers(params["min_size"], params["max_size"] + 1))
        img, objects = render_synthetic_image(
            rng, w, h, shifted=domains[image_id] == "shifted",
            min_obj_size=params["min_obj_size"], max_obj_size=params["max_obj_size"],
            max_objects=params["max_objects"])
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, params["jpeg_quality"]])
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode image {image_id} as JPEG")
        with open(os.path.join(voc_dir, "JPEGImages", image_id + ".jpg"), "wb") as f:
            f.write(buf.tobytes())
        with open(os.path.join(voc_dir, "Annotations", image_id + ".xml"), "w",
                  encoding="utf-8", newline="\n") as f:
            f.write(_voc_xml(image_id, w, h, objects))
        for c, _ in objects:
            n_objects[c] += 1

    for name in SPLITS:
        with open(os.path.join(voc_dir, "ImageSets", "Main", name + ".txt"), "w",
                  encoding="utf-8", newline="\n") as f:
            f.write("".join(i + "\n" for i in splits[name]))

    meta = {
        "format": "imagescore-det synthetic VOC",
        "classes": list(SYNTHETIC_CLASSES),
        "seed": seed,
        "year": 2007,
        "params": params,
        "splits": {name: len(splits[name]) for name in SPLITS},
        "num_shifted_unlabeled": n_shift,
        "num_objects": n_objects,
        "domains": domains,
    }
    with open(os.path.join(voc_dir, META_FILENAME), "w", encoding="utf-8", newline="\n") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return meta


def _check_existing(root, params):
    """Return the existing meta if ``root`` holds this exact dataset; raise if it holds
    something else; return None if ``root`` is absent or an empty directory."""
    if not os.path.exists(root):
        return None
    if os.path.isdir(root) and not os.listdir(root):
        return None
    meta_path = os.path.join(root, _YEAR_DIR, META_FILENAME)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise FileExistsError(
            f"{root} exists but is not a synthetic dataset made by generate_synthetic_voc "
            f"({meta_path}: {type(e).__name__}: {e}). Delete it (rm -r {root}) or pick "
            f"another root.") from e
    old = meta.get("params", {})
    if old != params:
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        details = ", ".join(f"{k}: existing={old.get(k)!r} requested={params.get(k)!r}"
                            for k in diff)
        raise FileExistsError(
            f"{root} already holds a synthetic dataset generated with different parameters "
            f"({details}). Delete it (rm -r {root}) or pick another root.")
    return meta


def generate_synthetic_voc(root, seed=0, num_labeled=200, num_unlabeled=300, num_test=100,
                           min_size=112, max_size=176, shifted_fraction=0.4,
                           min_obj_size=MIN_OBJ_SIZE, max_obj_size=MAX_OBJ_SIZE, max_objects=4,
                           jpeg_quality=90):
    """Generate the synthetic VOC dataset under ``root`` (creates ``root/VOC2007``).

    Args:
        root: dataset root; ``root/VOC2007`` is what ``register_pascal_voc`` takes as dirname.
        seed: everything drawn is a function of it (and of the other parameters).
        num_labeled, num_unlabeled, num_test: split sizes. Labeled and test are typical.
        min_size, max_size: image width and height are drawn independently in this range.
        shifted_fraction: share of the unlabeled pool drawn from the shifted domain (exactly
            ``round(shifted_fraction * num_unlabeled)`` images).
        min_obj_size, max_obj_size: larger side of an object's box, in pixels (capped at
            60% of the image's shorter side).
        max_objects: objects per image are drawn uniformly in [1, max_objects] (fewer if
            they do not fit without overlapping).
        jpeg_quality: OpenCV JPEG quality.

    Returns:
        The metadata dict also written to ``root/VOC2007/synthetic_meta.json`` (keys:
        format, classes, seed, year, params, splits, num_shifted_unlabeled, num_objects,
        domains), plus two keys that are not in the file: ``dirname`` (absolute path of
        ``root/VOC2007``) and ``generated`` (False when an identical dataset already
        existed and nothing was written).

    Raises:
        FileExistsError: ``root`` exists with different parameters, or is not a dataset
            made by this function.
    """
    params = _params(seed, num_labeled, num_unlabeled, num_test, min_size, max_size,
                     shifted_fraction, min_obj_size, max_obj_size, max_objects, jpeg_quality)
    root = os.path.abspath(os.fspath(root))
    dirname = os.path.join(root, _YEAR_DIR)
    meta = _check_existing(root, params)
    if meta is not None:
        return dict(meta, dirname=dirname, generated=False)

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(root) + ".tmp-", dir=parent)
    try:
        meta = _write_dataset(os.path.join(tmp, _YEAR_DIR), params)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        try:
            os.replace(tmp, root)
        except OSError:
            # somebody else finished first: fine if it is the same dataset
            if _check_existing(root, params) is None:
                raise
            return dict(meta, dirname=dirname, generated=False)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dict(meta, dirname=dirname, generated=True)
