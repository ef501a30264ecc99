"""Drawing the synthetic set's images: cluttered backgrounds, shapes, and the shifted domain."""
import math

import cv2
import numpy as np

#: Object classes, defined by shape only (colour and texture are random).
SYNTHETIC_CLASSES = ("disc", "square", "triangle", "cross")
#: Default range of an object's larger box side in px (32-72 before 2026-11-28: the stride-16
#: detector learns these larger objects fast enough to reach its plateau in the quickstart).
MIN_OBJ_SIZE, MAX_OBJ_SIZE = 44, 96


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


def render_synthetic_image(rng, width, height, shifted=False, min_obj_size=MIN_OBJ_SIZE,
                           max_obj_size=MAX_OBJ_SIZE, max_objects=4, classes=SYNTHETIC_CLASSES):
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
