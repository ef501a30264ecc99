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
import math
import os
import shutil
import tempfile
from xml.sax.saxutils import escape

import cv2
import numpy as np

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "META_FILENAME",
    "SPLITS",
    "generate_synthetic_voc",
    "render_synthetic_image",
    "read_synthetic_meta",
]

#: Object classes, defined by shape only (colour and texture are random).
SYNTHETIC_CLASSES = ("disc", "square", "triangle", "cross")

#: Bumped whenever the drawing code changes what a given seed produces; part of the
#: parameters, so a dataset made by another version is reported as a mismatch.
GENERATOR_VERSION = 1

#: Name of the metadata file inside ``<root>/VOC2007``.
META_FILENAME = "synthetic_meta.json"

#: Split files written to ``ImageSets/Main``.
SPLITS = ("labeled", "unlabeled", "test", "trainval")

_YEAR_DIR = "VOC2007"


# -------------------------------------------------------------------------------------------
# Drawing
# -------------------------------------------------------------------------------------------
_SHIFT = 4  # cv2 fixed-point bits for sub-pixel polygon coordinates
_SCALE = 1 << _SHIFT


def _unit_shape(cls, rng):
    """Polygon (N, 2) of a shape centred on 0, before rotation/scaling."""
    if cls == "disc":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        aspect = rng.uniform(0.8, 1.0)
        return np.stack([np.cos(t), aspect * np.sin(t)], 1)
    if cls == "square":
        aspect = rng.uniform(0.85, 1.0)
        return np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], float)
    if cls == "triangle":
        ang = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-10, 10, 3))
        rad = rng.uniform(0.85, 1.15, 3)
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    if cls == "cross":
        w = rng.uniform(0.28, 0.42)  # arm half-width relative to arm half-length 1
        return np.array([[w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w], [-w, -1],
                         [w, -1], [w, -w], [1, -w], [1, w], [w, w]], float)
    raise ValueError(f"unknown synthetic class {cls!r}; known: {SYNTHETIC_CLASSES}")


def _shape_polygon(cls, extent, rng):
    """Rotated, scaled polygon whose bounding box's larger side is ``extent`` px."""
    pts = _unit_shape(cls, rng)
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    pts = pts @ rot.T
    pts -= (pts.max(0) + pts.min(0)) / 2
    span = (pts.max(0) - pts.min(0)).max()
    return pts * (extent / span)


def _fill_mask(shape_hw, pts):
    """Anti-aliased coverage mask in [0, 1] of a polygon given in float pixel centres."""
    m = np.zeros(shape_hw, np.uint8)
    p = np.round(pts * _SCALE).astype(np.int32)
    cv2.fillPoly(m, [p], 255, cv2.LINE_AA, _SHIFT)
    return m.astype(np.float32) / 255.0


def _background(h, w, rng, shifted):
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    th = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(th) + yy * math.sin(th))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    # low-frequency colour noise
    g = int(rng.integers(3, 7))
    low = rng.normal(0, 30 if shifted else 22, (g, g, 3)).astype(np.float32)
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return img.astype(np.float32)


def _add_clutter(img, rng, density):
    """Distractors that are not objects: lines, partial arcs, soft blobs, small dots."""
    h, w = img.shape[:2]

    def col():
        return tuple(float(v) for v in rng.uniform(0, 255, 3))

    for _ in range(int(rng.integers(1, 4) * density)):  # straight lines
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, col(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3) * density)):  # partial arcs (never closed)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (int(rng.integers(8, 40)), int(rng.integers(8, 40)))
        a0 = float(rng.uniform(0, 360))
        cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), a0, a0 + float(rng.uniform(40, 200)),
                    col(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4) * density)):  # soft gaussian blobs
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(4, 14)
        x0, x1 = max(int(cx - 3 * s), 0), min(int(cx + 3 * s) + 1, w)
        y0, y1 = max(int(cy - 3 * s), 0), min(int(cy + 3 * s) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        a = rng.uniform(0.3, 0.7) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        roi = img[y0:y1, x0:x1]
        roi[:] = roi * (1 - a[..., None]) + np.asarray(col(), np.float32) * a[..., None]
    for _ in range(int(rng.integers(0, 6) * density)):  # small dots, well below object size
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(1, 4)), col(), -1, cv2.LINE_AA)


def _texture(h, w, color, rng):
    """An (h, w, 3) fill for an object: solid, stripes, speckle or gradient."""
    kind = rng.choice(["solid", "stripes", "speckle", "gradient"])
    color = np.asarray(color, np.float32)
    tex = np.broadcast_to(color, (h, w, 3)).copy()
    if kind == "solid":
        return tex
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, np.pi)
    u = xx * math.cos(th) + yy * math.sin(th)
    if kind == "stripes":
        period = rng.uniform(4, 10)
        other = color * rng.uniform(0.45, 0.75)
        on = (np.sin(2 * np.pi * u / period) > 0)[..., None]
        return np.where(on, tex, other[None, None]).astype(np.float32)
    if kind == "speckle":
        return tex + rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(22)
    t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)  # gradient
    return (tex * (1 - 0.45 * t[..., None])).astype(np.float32)


def _box_iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def render_synthetic_image(rng, width, height, shifted=False, min_obj_size=18,
                           max_obj_size=60, max_objects=4, classes=SYNTHETIC_CLASSES):
    """Draw one image.

    Returns ``(image, objects)``: ``image`` is an (height, width, 3) uint8 **BGR** array
    (OpenCV order); ``objects`` is a list of ``(class_name, (x0, y0, x1, y1))`` with 0-based
    *inclusive* pixel bounds of the drawn shape (its pixels with >= 50% coverage; the
    amodal extent, i.e. occluders drawn later in the shifted domain do not shrink it).
    """
    h, w = int(height), int(width)
    img = _background(h, w, rng, shifted)
    _add_clutter(img, rng, density=2 if shifted else 1)

    n = int(rng.integers(1, max_objects + 1))
    objects = []
    for _ in range(n):
        for _attempt in range(30):
            cls = classes[int(rng.integers(len(classes)))]
            extent = rng.uniform(min_obj_size, min(max_obj_size, 0.6 * min(h, w)))
            pts = _shape_polygon(cls, extent, rng)
            lo, hi = pts.min(0), pts.max(0)
            cx = rng.uniform(1 - lo[0], w - 2 - hi[0])
            cy = rng.uniform(1 - lo[1], h - 2 - hi[1])
            pts = pts + [cx, cy]
            # work in a region of interest around the polygon (a few px of margin)
            rx0, ry0 = max(int(pts[:, 0].min()) - 3, 0), max(int(pts[:, 1].min()) - 3, 0)
            rx1 = min(int(math.ceil(pts[:, 0].max())) + 4, w)
            ry1 = min(int(math.ceil(pts[:, 1].max())) + 4, h)
            alpha = _fill_mask((ry1 - ry0, rx1 - rx0), pts - [rx0, ry0])
            ys, xs = np.nonzero(alpha >= 0.5)
            if len(xs) == 0:
                continue
            box = (int(xs.min()) + rx0, int(ys.min()) + ry0,
                   int(xs.max()) + rx0, int(ys.max()) + ry0)
            if all(_box_iou(box, b) < 0.15 for _, b in objects):
                break
        else:
            continue  # image too crowded: fewer objects
        roi = img[ry0:ry1, rx0:rx1]
        # colour: in the typical domain clearly different from the local background
        bg_mean = roi.reshape(-1, 3).mean(0)
        for _attempt in range(20):
            color = rng.uniform(0, 255, 3)
            if np.abs(color - bg_mean).sum() >= 150:
                break
        tex = _texture(ry1 - ry0, rx1 - rx0, color, rng)
        if rng.random() < 0.5:  # outline ring
            k = int(rng.integers(1, 3))
            inner = cv2.erode(alpha, np.ones((3, 3), np.uint8), iterations=k)
            ring = np.clip(alpha - inner, 0, 1)
            out_col = color * 0.35 if rng.random() < 0.5 else rng.uniform(0, 255, 3)
            tex = tex * (1 - ring[..., None]) + out_col.astype(np.float32) * ring[..., None]
        a = (alpha * (rng.uniform(0.65, 0.9) if shifted else 1.0))[..., None]
        roi[:] = roi * (1 - a) + tex * a
        objects.append((cls, box))

    if shifted:
        # occluding bars across the image, drawn over the objects
        for _ in range(int(rng.integers(1, 4))):
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, tuple(float(v) for v in rng.uniform(0, 255, 3)),
                     int(rng.integers(3, 8)), cv2.LINE_AA)
        # palette/contrast shift: desaturate, tint, compress contrast
        gray = img.mean(2, keepdims=True)
        img = gray + rng.uniform(0.15, 0.45) * (img - gray)
        mean = img.mean()
        img = mean + rng.uniform(0.55, 0.8) * (img - mean)
        img = img * rng.uniform(0.75, 1.15, 3)[None, None].astype(np.float32)
        sigma = np.float32(rng.uniform(15, 26))
        img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    else:
        sigma = np.float32(rng.uniform(3, 8))
        img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


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
                           min_obj_size=18, max_obj_size=60, max_objects=4, jpeg_quality=90):
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
