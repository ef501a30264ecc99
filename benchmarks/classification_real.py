#!/usr/bin/env python
"""The Image Score paper's classification experiment (its Tables 1-2), CPU-sized, on real photos.

Every object box of a VOC-layout root (default: the real VOC2007 photos in
../shared/voc2007-real) is cropped to a small square image labeled with its class: the
``labeled`` split gives the training crops, ``unlabeled`` the pool (its labels are used only
to measure, and by the oracle), ``test`` the evaluation crops. A small CNN is pre-trained on
the labeled crops; then every selector continues from that same checkpoint for the same
number of epochs on the labeled crops plus pool crops pseudo-labeled with the model's own
prediction, the selection refreshed at the start of every epoch with the current model:

* ``none``: labeled crops only (the paired supervised baseline: training longer);
* ``softmax``: rank by the max softmax probability; ``random``;
* ``image_score``: the project's ImageScorer (``imagescore_det.scoring``) with per-class masks
  fitted on the labeled crops with their true labels, each pool crop scored against the mask
  of its predicted class, IoU, every ReLU; variants ``_recall``, ``_precision`` (when the
  scoring core has it), ``_global`` (one mask for all classes), ``_deepest`` (last ReLU only);
* ``oracle``: the crops ``random`` chooses (the same scores, from random's stream), trained on
  with their true labels instead of the model's predictions (an upper bound for pseudo-labels
  at this count; the detection pipeline's ``oracle`` selector is the same idea). Its first
  selection is random's, crop for crop; later ones fill the per-predicted-class quotas with
  the oracle model's own predictions, so they may differ from random's.

Selection, every selector alike: per predicted class c, the top ``ceil(alpha * n_c)`` pool
crops predicted as c, alpha = IMAGE_SCORE.TOP_FRACTION (0.3). The quotas come from the
pre-trained checkpoint's predictions and stay fixed, so every selector pseudo-labels the same
number of crops; when the current model predicts a class fewer times than its quota, the
shortfall goes to the unselected crops with the best within-class rank fraction. ``none``
trains as many SGD steps an epoch as the selectors (labeled crops + the quotas' sum, drawn as
whole passes over the labeled crops, the last one cut), so only the data differs.

Data checks (``imagescore_det.data.checks.check_voc``): a missing VOC2007/ directory or split
file, or an empty split, raises DataError naming the file and the layout. An image without
its annotation XML, with a bad XML, or with a missing/unreadable/mismatched JPEG is skipped;
difficult, unknown-class, empty and small (< --min-box px) objects are skipped; boxes
reaching outside the image are clipped. Every case is counted in the JSON and logged with
the file. Crops are cached in --work-dir (npz), per-seed results and checkpoints too; a rerun
reuses them.

Reported (JSON, PNG, Markdown beside ``--output``; _classification_real_report.py): test
accuracy before/after per selector and seed (mean +- std), per-class differences vs ``none``
and ``softmax`` with one-sided paired bootstrap p-values over test crops, AUROC of each score
for "the predicted label is correct" on the pool, pseudo-label accuracy by score decile, the
selected pseudo-labels' precision and count.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/classification_real.py       # ~20 min
    .venv/bin/python benchmarks/classification_real.py --seeds 0 --epochs 2 --continue-epochs 1 \
        --output /tmp/cls/out.json --work-dir /tmp/cls/work                     # smoke run
"""
import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _classification_real_report as report  # noqa: E402
from _bench_cli import recorded_path  # noqa: E402
from imagescore_det.data.checks import (  # noqa: E402
    ANNOTATION_KINDS, IMAGE_KINDS, SPLIT_KINDS, check_voc)
from imagescore_det.data.voc_xml import parse_voc_xml, to_detectron2_box  # noqa: E402
from imagescore_det.scoring import ImageBatch, ImageScorer  # noqa: E402
from imagescore_det.scoring.scorer import SIMILARITIES  # noqa: E402
from imagescore_det.utils import (  # noqa: E402
    atomic_write, atomic_write_json, atomic_write_text, json_plain)

log = logging.getLogger("classification_real")
DEFAULT_ROOT = os.path.join(os.path.dirname(ROOT), "shared", "voc2007-real")
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "classification_real.json")
# Detectron2's pascal_voc.CLASS_NAMES, in its order (a test checks they are equal)
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor")
SPLITS = ("labeled", "unlabeled", "test")
LAYOUT = ("A VOC-layout root holds VOC2007/Annotations/<id>.xml, VOC2007/JPEGImages/<id>.jpg "
          "and VOC2007/ImageSets/Main/{labeled,unlabeled,test}.txt (one image id per line); "
          "--root is the directory that contains VOC2007/.")
# Image Score selectors: (similarity, per-class masks, layers)
SCORE_VARIANTS = {"image_score": ("iou", True, "all"),
                  "image_score_recall": ("recall", True, "all"),
                  "image_score_precision": ("precision", True, "all"),
                  "image_score_global": ("iou", False, "all"),
                  "image_score_deepest": ("iou", True, "deepest")}
SELECTORS = ("none", "softmax", "random", *SCORE_VARIANTS, "oracle")
WIDTHS = (16, 32, 64, 64)


class DataError(ValueError):
    """The root cannot be used; the message names the file and the fix."""


def top_fraction():
    """The project's IMAGE_SCORE.TOP_FRACTION default."""
    from detectron2.config import get_cfg
    from imagescore_det.config import add_imagescore_config
    cfg = get_cfg()
    add_imagescore_config(cfg)
    return float(cfg.IMAGE_SCORE.TOP_FRACTION)


# ------------------------------------------------------------------------------ crops
def _difficult_flags(xml_path):
    """Per object, in file order, its <difficult> flag (the project's reader drops it)."""
    return [(o.findtext("difficult") or "0").strip() == "1"
            for o in ET.parse(xml_path).getroot().findall("object")]


def split_crops(voc_dir, split, size, context, min_box, stats):
    """Crops of every usable object of one split: (uint8 (N, size, size, 3), labels (N,)).

    The square crop is centred on the (clipped) box, its side the box's longer side plus
    ``context`` of it on each side; what falls outside the image is black. Skips and clips
    are counted in ``stats`` (see the module docstring).
    """
    findings = check_voc(voc_dir, split, CLASSES).findings
    fatal = [f for f in findings if f.kind in SPLIT_KINDS - {"duplicate_id"}]
    if fatal:
        raise DataError("\n".join(f"{f}\n  fix: {f.fix}" for f in fatal) + "\n" + LAYOUT)
    skip_kinds, bad = (ANNOTATION_KINDS | IMAGE_KINDS) - {"unknown_class"}, {}
    for f in findings:
        log.warning("%s: %s (fix: %s)", split, f, f.fix)
        if f.kind in skip_kinds:
            bad.setdefault(f.image_id, f)
    with open(os.path.join(voc_dir, "ImageSets", "Main", split + ".txt")) as fh:
        ids = list(dict.fromkeys(line.strip() for line in fh if line.strip()))
    from PIL import Image

    def count(key):
        stats[key] = stats.get(key, 0) + 1

    def skip(key, path):
        count(key)
        stats.setdefault("skipped_files", []).append(path)

    crops, labels = [], []
    for image_id in ids:
        if image_id in bad:
            skip(f"images_skipped_{bad[image_id].kind}", bad[image_id].path)
            continue
        xml = os.path.join(voc_dir, "Annotations", image_id + ".xml")
        jpg = os.path.join(voc_dir, "JPEGImages", image_id + ".jpg")
        width, height, objects = parse_voc_xml(xml)
        try:
            with Image.open(jpg) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as e:  # its header was fine but it does not decode
            log.warning("%s: %s does not decode (%s): skipped; re-export it or delete its id "
                        "from the split file", split, jpg, e)
            skip("images_skipped_unreadable_image", jpg)
            continue
        count("images")
        for (name, box), difficult in zip(objects, _difficult_flags(xml)):
            count("objects")
            if name not in CLASSES or difficult:
                count("objects_skipped_" + ("difficult" if name in CLASSES else "unknown_class"))
                continue
            x0, y0, x1, y1 = to_detectron2_box(box)
            clipped = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
            if clipped != (x0, y0, x1, y1):
                count("boxes_clipped_to_image")
                log.warning("%s: %s: box %s reaches outside the %dx%d image: clipped", split, xml,
                            box, width, height)
            x0, y0, x1, y1 = clipped
            if x1 <= x0 or y1 <= y0:
                count("objects_skipped_empty_box")
                continue
            if min(x1 - x0, y1 - y0) < min_box:
                count(f"objects_skipped_smaller_than_{min_box}px")
                continue
            half = max(x1 - x0, y1 - y0) * (1 + 2 * context) / 2
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            region = tuple(int(round(v)) for v in (mx - half, my - half, mx + half, my + half))
            crops.append(np.asarray(image.crop(region).resize((size, size), Image.BILINEAR)))
            labels.append(CLASSES.index(name))
    if not crops:
        raise DataError(f"Split {split!r} of {voc_dir} gave no usable crop ({stats}). {LAYOUT}")
    return np.stack(crops).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def load_crops(root, work_dir, size, context, min_box):
    """The three splits' crops, cached in ``work_dir`` (keyed by the root, its split files and
    the crop settings); returns ({split: (x, y)}, {split: stats})."""
    voc_dir = os.path.join(root, "VOC2007")
    key = hashlib.sha256(repr((os.path.abspath(root), size, context, min_box)).encode())
    for split in SPLITS:
        path = os.path.join(voc_dir, "ImageSets", "Main", split + ".txt")
        if not os.path.isfile(path):
            raise DataError(f"Split file {path} does not exist. {LAYOUT}")
        with open(path, "rb") as fh:
            key.update(fh.read())
    cache = os.path.join(work_dir, f"crops_{key.hexdigest()[:16]}.npz")
    if os.path.isfile(cache):
        with np.load(cache) as z:
            return {s: (z["x_" + s], z["y_" + s]) for s in SPLITS}, json.loads(str(z["stats"]))
    data, stats = {}, {}
    for split in SPLITS:
        stats[split] = {}
        data[split] = split_crops(voc_dir, split, size, context, min_box, stats[split])
        log.info("%s: %d crops; %s", split, len(data[split][1]),
                 {k: v for k, v in stats[split].items() if k != "skipped_files"})
    arrays = {f"{v}_{s}": data[s][i] for s in SPLITS for i, v in enumerate("xy")}
    atomic_write(cache, lambda f: np.savez(f, stats=json.dumps(stats), **arrays))
    return data, stats


# ------------------------------------------------------------------------------ model
class SmallCNN(nn.Module):
    """4 conv blocks (3x3 conv, BN, ReLU; 2x2 max-pool between), global average pool, linear.
    The four ReLUs are the scored layers."""

    def __init__(self, num_classes, widths=WIDTHS):
        super().__init__()
        blocks, c_in = [], 3
        for i, c in enumerate(widths):
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(c), nn.ReLU()))
            if i < len(widths) - 1:
                blocks.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def relu_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


def epoch_indices(n, num_samples, gen):
    """The sample order of one epoch: whole random permutations of ``range(n)``, the last one
    cut, ``num_samples`` in all (None: one permutation)."""
    num_samples = n if num_samples is None else num_samples
    passes = [torch.randperm(n, generator=gen) for _ in range(-(-num_samples // n))]
    return torch.cat(passes)[:num_samples]


def run_epoch(model, opt, x, y, lr, gen, batch=128, num_samples=None):
    """One epoch of SGD on float inputs ``x``: random flips, a random +-3 px shift per batch.
    ``num_samples``: crops drawn this epoch (``epoch_indices``; default one pass). Returns
    the number of SGD steps."""
    model.train()
    for group in opt.param_groups:
        group["lr"] = lr
    steps = 0
    for idx in epoch_indices(len(y), num_samples, gen).split(batch):
        steps += 1
        xb = x[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        dx, dy = torch.randint(0, 7, (2,), generator=gen).tolist()
        xb = F.pad(xb, (3,) * 4, mode="replicate")[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps


@torch.no_grad()
def predict(model, x, allowed, batch=128):
    """Softmax probabilities; classes without labeled crops (``~allowed``) are never predicted
    (per-class masks need labeled images of the predicted class)."""
    model.eval()
    logits = torch.cat([model(xb) for xb in x.split(batch)])
    return torch.softmax(logits.masked_fill(~allowed, -math.inf), 1).numpy()


def cosine(lr0, lr1, epoch, epochs):
    return lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * epoch / max(1, epochs)))


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4,
                           nesterov=True)


# ------------------------------------------------------------------------------ selection
def class_quotas(pred, num_classes, alpha):
    """The alpha_c rule: ceil(alpha * n_c) crops of each predicted class c."""
    return np.ceil(alpha * np.bincount(pred, minlength=num_classes) - 1e-9).astype(np.int64)


def select(scores, pred, quotas):
    """Sorted pool indices: per predicted class c its quotas[c] highest scores (ties: pool
    order); a class predicted fewer than quotas[c] times passes the shortfall to the unselected
    crops with the best within-class rank fraction, so the total is always sum(quotas)."""
    scores, pred = np.asarray(scores, dtype=np.float64), np.asarray(pred)
    n = len(scores)
    order = np.lexsort((np.arange(n), -scores))  # best first
    chosen, rank = np.zeros(n, dtype=bool), np.zeros(n)
    for c, quota in enumerate(quotas):
        members = order[pred[order] == c]
        chosen[members[:quota]] = True
        rank[members] = (np.arange(len(members)) + 0.5) / max(1, len(members))
    short = int(min(np.sum(quotas), n) - chosen.sum())
    if short > 0:
        rest = np.flatnonzero(~chosen)
        chosen[rest[np.lexsort((rest, rank[rest]))][:short]] = True
    return np.flatnonzero(chosen)


def available_variants():
    """The Image Score variants whose similarity the scoring core has."""
    return [v for v, (similarity, _, _) in SCORE_VARIANTS.items() if similarity in SIMILARITIES]


def batches(x, labels=None, batch=128):  # 128 beat 512 by 30% here (cache)
    for i in range(0, len(x), batch):
        yield (x[i:i + batch] if labels is None
               else ImageBatch(x[i:i + batch], labels=labels[i:i + batch]))


def image_scores(model, variant, data, pred):
    """The project's Image Score of every pool crop: fit on the labeled crops (true labels),
    score against the mask of each crop's predicted label (or one global mask)."""
    similarity, per_class, layers = SCORE_VARIANTS[variant]
    names = relu_names(model)
    scorer = ImageScorer(model, layers=names if layers == "all" else names[-1:],
                         similarity=similarity, num_classes=len(CLASSES) if per_class else None)
    as_labels = (lambda y: torch.as_tensor(y)) if per_class else (lambda y: None)
    scorer.fit(batches(data["x_lab"], as_labels(data["y_lab"])))
    return scorer.score(batches(data["x_pool"], as_labels(pred))).numpy()


def selector_scores(name, model, probs, data, rng):
    pred = probs.argmax(1)
    if name == "softmax":
        return probs.max(1)
    if name in ("random", "oracle"):  # the oracle chooses as random does (same stream)
        return rng.random(len(pred))
    return image_scores(model, name, data, pred)


# ------------------------------------------------------------------------------ experiment
def prepare(raw):
    """uint8 NHWC crops -> float NCHW tensors, normalized by the labeled crops' channel stats."""
    lab = raw["labeled"][0].astype(np.float32) / 255
    mean, std = lab.mean((0, 1, 2)), lab.std((0, 1, 2)) + 1e-6

    def to_x(u8):
        return torch.from_numpy(((u8.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
                                .copy())
    return {"x_lab": to_x(raw["labeled"][0]), "y_lab": raw["labeled"][1],
            "x_pool": to_x(raw["unlabeled"][0]), "y_pool": raw["unlabeled"][1],
            "x_test": to_x(raw["test"][0]), "y_test": raw["test"][1]}


def correct_on_test(model, data, allowed):
    return (predict(model, data["x_test"], allowed).argmax(1) == data["y_test"]).astype(np.int8)


def pretrain(data, args, seed, allowed):
    torch.manual_seed(seed)
    model = SmallCNN(len(CLASSES))
    opt, gen, curve = sgd(model, args.lr), torch.Generator().manual_seed(seed), []
    y = torch.as_tensor(data["y_lab"])
    for epoch in range(args.epochs):
        lr = cosine(args.lr, args.lr * 0.02, epoch, args.epochs)
        run_epoch(model, opt, data["x_lab"], y, lr, gen)
        curve.append(float(correct_on_test(model, data, allowed).mean()))
        log.info("seed %d pre-train epoch %d/%d: test accuracy %.4f", seed, epoch + 1,
                 args.epochs, curve[-1])
    return model, curve


def pool_analysis(model, data, allowed):
    """At the pre-trained checkpoint: every score of the pool crops, their AUROC for "the
    predicted label is correct" and the pseudo-label accuracy by score decile."""
    probs = predict(model, data["x_pool"], allowed)
    pred = probs.argmax(1)
    correct = pred == data["y_pool"]
    scores = {"softmax": probs.max(1)}
    for variant in available_variants():
        scores[variant] = image_scores(model, variant, data, pred)
    return pred, scores, {
        "pseudo_label_accuracy": float(correct.mean()), "pool": len(pred),
        "auroc": {k: report.auroc(s, correct) for k, s in scores.items()},
        "auroc_within_class": {k: report.within_class_auroc(s, correct, pred)
                               for k, s in scores.items()},
        "decile_accuracy": {k: report.decile_accuracy(s, correct) for k, s in scores.items()}}


def continue_run(name, model, data, args, seed, quotas, allowed, first_scores=None):
    """Continue training from the checkpoint in ``model`` with selector ``name``.
    ``first_scores``: the pool's scores at the checkpoint, if already computed."""
    # the oracle draws random's scores: the same crops as random from the same checkpoint
    rng = np.random.default_rng([seed, SELECTORS.index("random" if name == "oracle" else name)])
    opt, gen = sgd(model, args.continue_lr), torch.Generator().manual_seed(10_000 + seed)
    curve, selected, steps = [], [], []
    # none: as many crops (so SGD steps) an epoch as a selector's labeled + selected ones
    samples = len(data["y_lab"]) + int(np.sum(quotas)) if name == "none" else None
    for epoch in range(args.continue_epochs):
        x, y = data["x_lab"], data["y_lab"]
        if name != "none":
            probs = predict(model, data["x_pool"], allowed)
            pred = probs.argmax(1)
            scores = (first_scores if epoch == 0 and first_scores is not None
                      else selector_scores(name, model, probs, data, rng))
            chosen = select(scores, pred, quotas)
            labels = data["y_pool"][chosen] if name == "oracle" else pred[chosen]
            selected.append({"count": len(chosen), "chosen": chosen.tolist(),
                             "precision": float(np.mean(labels == data["y_pool"][chosen]))})
            x, y = torch.cat([x, data["x_pool"][chosen]]), np.concatenate([y, labels])
        lr = cosine(args.continue_lr, args.continue_lr * 0.02, epoch, args.continue_epochs)
        steps.append(run_epoch(model, opt, x, torch.as_tensor(y), lr, gen, num_samples=samples))
        correct = correct_on_test(model, data, allowed)
        curve.append(float(correct.mean()))
        picked = (f"selected {selected[-1]['count']} (precision {selected[-1]['precision']:.3f}), "
                  if selected else "")
        log.info("seed %d %s epoch %d/%d: %stest accuracy %.4f", seed, name, epoch + 1,
                 args.continue_epochs, picked, curve[-1])
    return {"curve": curve, "accuracy": curve[-1], "selected": selected, "steps": steps,
            "test_correct": correct.tolist()}


def step_seconds(result, selectors):
    """Seconds (wall time, measured when each ran) of the steps ``result`` holds: the
    pre-training, the pool analysis and each of ``selectors``' continuations."""
    return (result.get("pretrain_seconds", 0.0) + result.get("pool", {}).get("seconds", 0.0)
            + sum(result["selectors"][s]["seconds"] for s in selectors
                  if s in result["selectors"]))


def run_seed(seed, data, args, key):
    """One seed: pre-train (or reuse the checkpoint), analyse the pool, run every selector
    from the checkpoint; saved after each step in the work dir and reused by a rerun.
    Returns the seed's result and the seconds its reused steps took when they ran."""
    path = os.path.join(args.work_dir, f"seed{seed}_{key}")
    allowed = torch.as_tensor(np.bincount(data["y_lab"], minlength=len(CLASSES)) > 0)
    result = {"seed": seed, "selectors": {}}
    if os.path.isfile(path + ".json") and os.path.isfile(path + ".pt"):
        with open(path + ".json") as fh:
            result = json.load(fh)
    reused = step_seconds(result, args.selectors)
    model = SmallCNN(len(CLASSES))
    if "pretrain_curve" in result:
        model.load_state_dict(torch.load(path + ".pt", weights_only=True))
    else:
        t0 = time.perf_counter()
        model, result["pretrain_curve"] = pretrain(data, args, seed, allowed)
        result["pretrain_seconds"] = time.perf_counter() - t0
        result["accuracy_before"] = result["pretrain_curve"][-1]
        atomic_write(path + ".pt", lambda f: torch.save(model.state_dict(), f))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scores = {}
    if "pool" not in result:
        t0 = time.perf_counter()
        pred, scores, result["pool"] = pool_analysis(model, data, allowed)
        result["pool"]["quotas"] = class_quotas(pred, len(CLASSES), args.alpha).tolist()
        result["pool"]["seconds"] = time.perf_counter() - t0
        atomic_write_json(path + ".json", json_plain(result))
    quotas = np.asarray(result["pool"]["quotas"])
    for name in args.selectors:
        if name in result["selectors"]:
            log.info("seed %d %s: reused from %s.json", seed, name, path)
            continue
        model.load_state_dict(state)
        t0 = time.perf_counter()
        run = continue_run(name, model, data, args, seed, quotas, allowed, scores.get(name))
        result["selectors"][name] = dict(run, seconds=time.perf_counter() - t0)
        atomic_write_json(path + ".json", json_plain(result))
    return result, reused


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=DEFAULT_ROOT, help="VOC-layout root (contains VOC2007/)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON path; PNG and MD beside it")
    p.add_argument("--work-dir", default=None, help="crop cache, per-seed results and "
                   "checkpoints (default: output/classification_real, git-ignored)")
    p.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    p.add_argument("--epochs", type=int, default=24, help="pre-training epochs (labeled crops)")
    p.add_argument("--continue-epochs", type=int, default=5, help="epochs of each selector")
    p.add_argument("--lr", type=float, default=0.05, help="pre-training LR (cosine to 2%%)")
    p.add_argument("--continue-lr", type=float, default=0.02, help="continuation LR (cosine)")
    p.add_argument("--alpha", type=float, default=None, help="default IMAGE_SCORE.TOP_FRACTION")
    p.add_argument("--crop-size", type=int, default=32)
    p.add_argument("--context", type=float, default=0.15, help="context on each side (x box)")
    p.add_argument("--min-box", type=int, default=16, help="skip boxes with a side under this")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    args.work_dir = args.work_dir or os.path.join(ROOT, "output", "classification_real")
    args.alpha = top_fraction() if args.alpha is None else args.alpha
    missing = [v for v in SCORE_VARIANTS if v not in available_variants()]
    note = "".join(f"{v} skipped: the scoring core has no similarity {SCORE_VARIANTS[v][0]!r}. "
                   for v in missing)
    if note:
        print(note)
    args.selectors = [s for s in args.selectors if s not in missing]
    raw, stats = load_crops(args.root, args.work_dir, args.crop_size, args.context, args.min_box)
    data = prepare(raw)
    key = hashlib.sha256(repr((
        "none: equal steps; oracle: random's choice, true labels",  # results of older code differ
        [raw[s][1].tolist() for s in SPLITS], args.epochs, args.continue_epochs, args.lr,
        args.continue_lr, args.alpha, args.crop_size, args.context, args.min_box, WIDTHS,
    )).encode()).hexdigest()[:12]
    results, reused = map(list, zip(*[run_seed(seed, data, args, key) for seed in args.seeds]))
    summary = report.summarize(results, args.selectors, data["y_test"], CLASSES, args.resamples)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    invocation = time.perf_counter() - t0
    # a rerun reuses the per-seed steps saved in the work dir: the run's wall time is this
    # invocation's plus what the reused steps took when they ran (not this invocation's alone)
    meta = {"command": f"python benchmarks/classification_real.py {command}".strip(),
            "wall_seconds": invocation + sum(reused), "invocation_seconds": invocation,
            "reused_seconds": sum(reused), "threads": args.threads,
            "compute_seconds": sum(step_seconds(r, args.selectors) for r in results),
            "seeds": args.seeds, "root": recorded_path(args.root),
            "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
            "crop_size": args.crop_size, "context": args.context, "min_box": args.min_box,
            "crops": {s: len(raw[s][1]) for s in SPLITS}, "widths": list(WIDTHS),
            "data_stats": {s: {k: v for k, v in st.items() if k != "skipped_files"}
                           for s, st in stats.items()},
            "epochs": args.epochs, "continue_epochs": args.continue_epochs, "alpha": args.alpha,
            "lr": args.lr, "continue_lr": args.continue_lr, "note": note.strip(),
            "class_counts": {s: dict(zip(CLASSES, np.bincount(raw[s][1], minlength=len(CLASSES))))
                             for s in SPLITS}}
    per_seed = [dict(r, selectors={s: dict(
        {k: v for k, v in r["selectors"][s].items() if k != "test_correct"},
        selected=[{k: v for k, v in e.items() if k != "chosen"}  # indices: in the work dir
                  for e in r["selectors"][s]["selected"]]) for s in args.selectors})
                for r in results]
    skipped = {s: [recorded_path(f) for f in st.get("skipped_files", [])]
               for s, st in stats.items()}
    base = os.path.splitext(args.output)[0]
    atomic_write_json(args.output, json_plain({"meta": meta, "summary": summary,
                                               "per_seed": per_seed, "skipped_files": skipped}))
    report.plot(base + ".png", summary, args.selectors)
    atomic_write_text(base + ".md", report.markdown(summary, meta, args.selectors,
                                                    os.path.basename(base) + ".png"))
    log.info("wrote %s and its .png/.md in %.1f min", args.output, meta["wall_seconds"] / 60)
    return summary


if __name__ == "__main__":
    try:
        main()
    except DataError as e:  # bad data: the message names the file and the fix, no traceback
        sys.exit(f"classification_real: {e}")
