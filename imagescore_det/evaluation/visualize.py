"""Drawing a selection round's pseudo-labels (``tools/visualize_pseudo_labels.py``).

A round directory (``OUTPUT_DIR/image_score/round_<k>/``) is read through
``imagescore_det.engine.round_files`` (which defines its files). :func:`visualize_round` draws its selected images, highest score
first: pseudo boxes solid in a per-class colour with "class score", true boxes (from the
image's VOC XML, when there is one) dashed white. Every box has a thin black underlay so
it reads on any background.

Each image is drawn at ``scale`` = an integer >= 1 that brings its longer side to about
``target_size`` pixels; pixel (x, y) of the image is pixel (x * scale, y * scale) of its PNG
(a caption strip is added *below* the image, never above or to the left).
"""
import io
import logging
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..data.voc_xml import parse_voc_xml, to_detectron2_box  # noqa: E402
from ..engine import round_files  # noqa: E402
from ..engine.round_files import RoundError  # noqa: E402,F401  (raised by visualize_round)
from ..utils import atomic_write_bytes  # noqa: E402

logger = logging.getLogger(__name__)

MONTAGE = "pseudo_labels_montage.png"
TRUTH_COLOR = "#ffffff"
# Saturated colours that stand out from each other (no pure white: that is the truth).
PALETTE = ["#ff3b30", "#1e90ff", "#ffd60a", "#ff2dff", "#00e5ff", "#ff9500", "#7cff4f",
           "#b388ff", "#ff6f91", "#00c7a9", "#c0ff00", "#ffa8a8", "#5ac8fa", "#e0b0ff",
           "#ffcc80", "#80deea", "#f48fb1", "#aed581", "#ce93d8", "#ffab40"]
_IMAGE_PNG = re.compile(r"^\d{3}_rank\d+_.*\.png$")


# ----------------------------------------------------------------------------- reading
def read_round(round_dir):
    """(manifest dict, pseudo dicts, {file_name: (score, rank, image_id)}) of a round folder."""
    record = round_files.read_round(round_dir)
    scores = {row["file_name"]: (row["score"], row["rank"], row["image_id"])
              for row in record.scores or []}
    return record.manifest.to_dict(), record.pseudo, scores


def class_names_of(manifest, num_needed=0):
    """Class names of a round: ``thing_classes`` if the manifest has them, else the keys of
    ``per_class_boxes`` (written in class-id order), else the registered unlabeled dataset's
    metadata; ``class <k>`` for any id left over."""
    names = list(manifest.get("thing_classes") or manifest.get("per_class_boxes") or [])
    if not names:
        try:
            from detectron2.data import MetadataCatalog

            src = manifest.get("dataset_name", "").rsplit("_pseudo_r", 1)[0].split("+")[0]
            names = list(MetadataCatalog.get(src).get("thing_classes", None) or [])
        except Exception:  # noqa: BLE001 - names are a nicety
            names = []
    return names + [f"class {k}" for k in range(len(names), num_needed)]


def voc_annotation_path(file_name):
    """``.../VOC2007/JPEGImages/x.jpg`` -> ``.../VOC2007/Annotations/x.xml`` (None if absent)."""
    d = os.path.dirname(os.path.abspath(file_name))
    if os.path.basename(d) != "JPEGImages":
        return None
    stem = os.path.splitext(os.path.basename(file_name))[0]
    path = os.path.join(os.path.dirname(d), "Annotations", stem + ".xml")
    return path if os.path.isfile(path) else None


def read_voc_boxes(xml_path):
    """[(class name, [x0, y0, x1, y1])] of a VOC XML, in Detectron2's coordinates
    (``xmin - 1, ymin - 1, xmax, ymax``, as ``load_voc_instances``)."""
    return [(name, to_detectron2_box(box)) for name, box in parse_voc_xml(xml_path)[2]]


def read_rgb(file_name):
    with Image.open(file_name) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- drawing
def image_scale(height, width, target_size=480):
    """Integer upscaling that brings the longer side to about ``target_size`` (>= 1)."""
    return max(1, int(round(target_size / max(height, width))))


def draw_pseudo_labels(image, annotations, class_names, truth=None, caption=None,
                       target_size=480, max_boxes=0):
    """Draw one image's pseudo boxes (and true boxes); returns an RGB uint8 array.

    Args:
        image: (H, W, 3) RGB uint8.
        annotations: pseudo annotations (``bbox`` XYXY_ABS, ``category_id``, ``score``).
        class_names: names indexed by ``category_id``.
        truth: optional [(class name, box)] drawn dashed white.
        caption: text of the strip under the image.
        max_boxes: draw only the highest-scoring ones (0 = all).

    The image occupies the top-left ``H*scale x W*scale`` pixels of the result
    (``scale = image_scale(H, W, target_size)``), the caption strip is below it.
    """
    from detectron2.utils.visualizer import Visualizer

    h, w = image.shape[:2]
    scale = image_scale(h, w, target_size)
    font = 9.0 / scale  # points before the Visualizer scales it up by ``scale``
    strip = int(math.ceil(22.0 / scale)) if caption else 0
    canvas = np.concatenate([image, np.full((strip, w, 3), 32, np.uint8)], 0) if strip else image
    vis = Visualizer(canvas, scale=scale)
    px = 72.0 / vis.output.dpi  # matplotlib line widths are in points
    widths = (max(3.0, 0.9 * scale) * px, max(1.5, 0.45 * scale) * px)  # underlay, colour

    anns = sorted(annotations, key=lambda a: -float(a.get("score", 1.0)))
    if max_boxes and len(anns) > max_boxes:
        anns = anns[:max_boxes]
    for _, box in truth or ():
        _outlined_box(vis, box, TRUTH_COLOR, (0, (3, 2)), widths)
    for a in reversed(anns):  # best box drawn last, on top
        color = PALETTE[int(a["category_id"]) % len(PALETTE)]
        _outlined_box(vis, a["bbox"], color, "-", widths)
    for a in reversed(anns):
        x0, y0, x1, y1 = a["bbox"]
        name = class_names[int(a["category_id"])]
        label = f"{name} {float(a['score']):.2f}" if "score" in a else name
        color = PALETTE[int(a["category_id"]) % len(PALETTE)]
        ty = y0 if y0 > 0.08 * h else y1  # at the top edge, unless that leaves the image
        vis.draw_text(label, (x0, ty), font_size=font, color=color,
                      horizontal_alignment="left")
    if caption:
        vis.output.ax.text(2.0 / scale, h + strip / 2.0, caption, size=font * scale,
                           family="sans-serif", color="white", va="center", ha="left",
                           zorder=11)
    return vis.output.get_image()


def _outlined_box(vis, box, color, style, widths):
    """A box outline: black, then the coloured (possibly dashed) line on top of it."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    for c, lw, ls in (("black", widths[0], "-"), (color, widths[1], style)):
        vis.output.ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                                          linewidth=lw, linestyle=ls, zorder=5))


def encode_png(rgb):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_montage(path, images, title, cols=None):
    """A grid of RGB arrays (one per tile) with a title, written atomically as PNG."""
    n = len(images)
    cols = cols or max(1, int(math.ceil(math.sqrt(n))))
    rows = max(1, int(math.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.8 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im in zip(axes.ravel(), images):
        ax.imshow(im, interpolation="nearest")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.8 * rows + 0.6)), pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------- a round
def visualize_round(round_dir, output_dir=None, num=16, show_truth=False, max_boxes=0,
                    target_size=480):
    """Draw the ``num`` highest-scoring pseudo-labeled images of a round.

    Writes ``<output_dir>/<NNN>_rank<r>_<image_id>.png`` (NNN = 000 for the best) and
    ``pseudo_labels_montage.png`` (default ``output_dir``: ``<round_dir>/visualize``); PNGs of
    an earlier call in that directory are replaced. Returns a dict: ``images`` (one entry per
    drawn image: path, file_name, image_id, score, rank, scale, boxes, truth_boxes),
    ``montage`` (path) and ``num_pseudo_images``.
    """
    manifest, dicts, scores = read_round(round_dir)
    output_dir = output_dir or os.path.join(round_dir, "visualize")
    os.makedirs(output_dir, exist_ok=True)
    for f in os.listdir(output_dir):
        if _IMAGE_PNG.match(f):
            os.remove(os.path.join(output_dir, f))

    def key(item):
        j, d = item
        s = scores.get(d["file_name"])
        return (0, -s[0], s[1], j) if s else (1, 0.0, 0, j)

    ordered = [d for _, d in sorted(enumerate(dicts), key=key)]
    if num > 0:
        ordered = ordered[:num]
    max_cat = max([int(a["category_id"]) for d in ordered for a in d["annotations"]] or [-1])
    names = class_names_of(manifest, max_cat + 1)
    drawn, tiles, no_truth = [], [], 0
    for i, d in enumerate(ordered):
        score, rank, image_id = scores.get(d["file_name"], (None, None, None))
        image_id = str(d.get("image_id", image_id if image_id is not None else i))
        truth = None
        if show_truth:
            xml = voc_annotation_path(d["file_name"])
            if xml is not None:
                truth = read_voc_boxes(xml)
            else:
                no_truth += 1
        image = read_rgb(d["file_name"])
        n_boxes = len(d["annotations"])
        shown = min(n_boxes, max_boxes) if max_boxes else n_boxes
        caption = (f"#{rank if rank is not None else i + 1}  score {score:.3f}  "
                   if score is not None else f"#{i + 1}  ") + f"{image_id}  {n_boxes} boxes"
        if shown < n_boxes:
            caption += f" ({shown} shown)"
        if truth is not None:
            caption += f", {len(truth)} true"
        rgb = draw_pseudo_labels(image, d["annotations"], names, truth=truth, caption=caption,
                                 target_size=target_size, max_boxes=max_boxes)
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", image_id)
        path = os.path.join(output_dir, f"{i:03d}_rank{rank if rank is not None else 0}_"
                                        f"{safe_id}.png")
        atomic_write_bytes(path, encode_png(rgb))
        tiles.append(rgb)
        drawn.append({"path": path, "file_name": d["file_name"], "image_id": image_id,
                      "score": score, "rank": rank,
                      "scale": image_scale(image.shape[0], image.shape[1], target_size),
                      "boxes": n_boxes, "truth_boxes": None if truth is None else len(truth)})
    if show_truth and no_truth:
        logger.warning("%d of %d images have no VOC annotation next to them: drawn without "
                       "true boxes", no_truth, len(ordered))
    montage = None
    if tiles:
        title = (f"round {manifest.get('round', '?')} ({manifest.get('selector', '?')}): "
                 f"{len(tiles)} of {len(dicts)} pseudo-labeled images, best score first\n"
                 "solid: pseudo boxes (class score)"
                 + ("; dashed white: true boxes" if show_truth else ""))
        montage = write_montage(os.path.join(output_dir, MONTAGE), tiles, title)
    else:
        logger.warning("Round %s has no pseudo-labeled image (every selected image was dropped "
                       "for having fewer than MIN_BOXES_PER_IMAGE boxes)", round_dir)
    return {"images": drawn, "montage": montage, "num_pseudo_images": len(dicts),
            "output_dir": output_dir}
