"""A seeded labeled-fraction split of any registered dataset (``IMAGE_SCORE.SPLIT``).

The semi-supervised detection literature's 1% / 5% / 10% protocols (Unbiased Teacher's
``SUP_PERCENT`` + ``RANDOM_DATA_SEED``): a percentage (or a count) of a registered dataset's
images becomes the labeled set, the rest the unlabeled pool, chosen by a recorded seed.
:func:`register_split` registers both parts under derived names (:func:`split_names`),
lazily, from the source's dataset dicts (``DatasetCatalog.get(source)``), so it works for
any registered dataset (VOC, COCO json, in-memory) and the names go in ``DATASETS.TRAIN`` and
``IMAGE_SCORE.UNLABELED_DATASETS`` like any other. The pool keeps its annotations (hidden
from training; they measure pseudo-label precision and feed the ``oracle``).

The choice: the labeled images are the first ``k`` of ``numpy.random.default_rng(seed)
.permutation(n)``, kept in the source's order, with ``k = count`` or ``round(n * percent /
100)``. The same source, percent/count and seed give the same split on every machine.
"""
import dataclasses
import logging
from typing import List

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

# metadata copied from the source to both parts: the classes (what the model and the class
# check need), not the source's files (dirname/split/json_file would name the whole source
# to the data check and the evaluators)
CLASS_METADATA = ("thing_classes", "thing_colors", "thing_dataset_id_to_contiguous_id")
KEYS = "IMAGE_SCORE.SPLIT"


class SplitError(ValueError):
    """A split that cannot be made; the message names the setting and the fix."""


@dataclasses.dataclass
class Split:
    source: str
    percent: float
    count: int
    seed: int
    labeled: List[dict]
    unlabeled: List[dict]

    @property
    def names(self):
        return split_names(self.source, self.percent, self.count, self.seed)

    def class_balance(self, thing_classes):
        """Per class: images and boxes in the labeled part and in the whole source."""
        out = {}
        for name, part in (("labeled", self.labeled), ("source", self.labeled + self.unlabeled)):
            images, boxes = class_counts(part, len(thing_classes))
            for c, cls in enumerate(thing_classes):
                out.setdefault(cls, {})[f"{name}_images"] = int(images[c])
                out[cls][f"{name}_boxes"] = int(boxes[c])
        return out

    def record(self, thing_classes):
        """What OUTPUT_DIR/data_split.json holds: the settings, names, ids, class balance."""
        labeled, unlabeled = self.names
        return {"format_version": 1, "source": self.source, "percent": self.percent,
                "count": self.count, "seed": self.seed,
                "names": {"labeled": labeled, "unlabeled": unlabeled},
                "num_images": {"labeled": len(self.labeled), "unlabeled": len(self.unlabeled)},
                "class_balance": self.class_balance(thing_classes),
                "labeled_ids": [_plain_id(d) for d in self.labeled],
                "unlabeled_ids": [_plain_id(d) for d in self.unlabeled]}


def _plain_id(d):
    value = d.get("image_id", d.get("file_name"))
    return value.item() if hasattr(value, "item") else value


def split_names(source, percent, count, seed):
    """(labeled name, unlabeled name): ``<source>_sup<percent>_seed<seed>_{labeled,unlabeled}``
    with a percent (``%g``: 10.0 -> ``sup10``, 0.5 -> ``sup0.5``), ``<source>_n<count>_...``
    with a count."""
    size = f"n{int(count)}" if count else f"sup{float(percent):g}"
    stem = f"{source}_{size}_seed{int(seed)}"
    return f"{stem}_labeled", f"{stem}_unlabeled"


def labeled_indices(n, percent, count, seed):
    """Sorted indices of the labeled images among ``n`` (see the module docstring)."""
    k = int(count) if count else int(round(n * float(percent) / 100.0))
    if not 0 < k < n:
        setting = (f"{KEYS}.COUNT {count}" if count else
                   f"{KEYS}.PERCENT {percent:g} (= {k} image(s))")
        raise SplitError(
            f"{setting} of a dataset of {n} images leaves "
            + ("no labeled image" if k <= 0 else "no image for the unlabeled pool")
            + f": choose between 1 and {n - 1} labeled images ({KEYS}.COUNT) or a "
            f"percentage that gives that many ({KEYS}.PERCENT).")
    return np.sort(np.random.default_rng(int(seed)).permutation(n)[:k])


def class_counts(dicts, num_classes):
    """(images per class, boxes per class) of annotated dataset dicts."""
    images, boxes = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for d in dicts:
        classes = [int(a["category_id"]) for a in d["annotations"] if not a.get("iscrowd", 0)]
        np.add.at(boxes, classes, 1)
        images[sorted(set(classes))] += 1
    return images, boxes


def make_split(source, percent, count, seed):
    """The :class:`Split` of registered dataset ``source``. Raises :class:`SplitError` when
    it leaves no labeled or no pool image, when the source has images without annotations,
    or when a class of the source's ``thing_classes`` has no labeled image."""
    dicts = DatasetCatalog.get(source)
    missing = [d.get("file_name") for d in dicts if "annotations" not in d]
    if missing:
        raise SplitError(f"{KEYS}.DATASET '{source}' has {len(missing)} image(s) without "
                         f"annotations (e.g. {missing[0]}): only a labeled dataset can be "
                         "split into a labeled part and a pool. Name an annotated dataset.")
    chosen = set(labeled_indices(len(dicts), percent, count, seed).tolist())
    split = Split(source, float(percent), int(count), int(seed),
                  [d for i, d in enumerate(dicts) if i in chosen],
                  [d for i, d in enumerate(dicts) if i not in chosen])
    classes = MetadataCatalog.get(source).get("thing_classes", None)
    if classes is not None:
        labeled, _ = class_counts(split.labeled, len(classes))
        in_source, _ = class_counts(dicts, len(classes))
        empty = [c for c in range(len(classes)) if labeled[c] == 0]
        if empty:
            names = [classes[c] for c in empty]
            nowhere = [classes[c] for c in empty if in_source[c] == 0]
            fix = (f"The source has no image of {nowhere} at all: no split fixes that; use a "
                   "dataset with every class of its thing_classes." if nowhere else
                   f"Label more images ({KEYS}.PERCENT or COUNT) or draw another split "
                   f"({KEYS}.SEED).")
            raise SplitError(
                f"The split of '{source}' ({KEYS}.PERCENT {float(percent):g}, COUNT {count}, "
                f"SEED {seed}) leaves {len(empty)} class(es) with no labeled image: {names} "
                f"(labeled images per class: {dict(zip(classes, labeled.tolist()))}). {fix}")
    return split


def register_split(source, percent, count, seed):
    """Register the two parts of the split of ``source`` (lazily: nothing is loaded until
    ``DatasetCatalog.get``); returns their names. Registering the same split again is a
    no-op."""
    names = split_names(source, percent, count, seed)
    meta = MetadataCatalog.get(source)
    for part, name in zip(("labeled", "unlabeled"), names):
        if name in DatasetCatalog.list():
            continue

        def load(part=part):
            return getattr(make_split(source, percent, count, seed), part)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            split_of=source, split_part=part,
            **{k: meta.get(k) for k in CLASS_METADATA if meta.get(k, None) is not None})
    return names


def log_class_balance(split, thing_classes):
    """Log the labeled part's class balance (images and boxes per class)."""
    balance = split.class_balance(thing_classes)
    lines = [f"  {cls}: {b['labeled_images']} image(s), {b['labeled_boxes']} box(es) labeled "
             f"(source: {b['source_images']}, {b['source_boxes']})"
             for cls, b in balance.items()]
    logger.info("Split of %s: %d labeled (%s), %d unlabeled (%s), seed %d; class balance of "
                "the labeled part:\n%s", split.source, len(split.labeled), split.names[0],
                len(split.unlabeled), split.names[1], split.seed, "\n".join(lines))
    return balance


__all__ = ["SplitError", "Split", "split_names", "labeled_indices", "make_split",
           "register_split", "class_counts", "log_class_balance"]
