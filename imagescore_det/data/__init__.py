"""Datasets of imagescore-det.

Importing this module registers (lazily: nothing is read from disk until
``DatasetCatalog.get(name)``) the project's Detectron2 datasets, the way
``detectron2.data.datasets.builtin`` does:

==========================  =============================================  ==========
name                        directory                                      classes
==========================  =============================================  ==========
synthetic_voc_labeled       ``<root>/synthetic_voc/VOC2007``, split        SYNTHETIC_
synthetic_voc_unlabeled     ``labeled`` / ``unlabeled`` / ``test`` /       CLASSES
synthetic_voc_test          ``trainval``                                   (4 shapes)
synthetic_voc_trainval
synthetic_headroom_*        ``<root>/synthetic_headroom/VOC2007``: the     SYNTHETIC_
                            headroom protocol's data (HEADROOM_DATASETS),  CLASSES
                            pool from the labeled data's distribution
synthetic_headroom_         ``<root>/synthetic_headroom_shifted/VOC2007``  SYNTHETIC_
shifted_*                   the same labeled/test images, 40% shifted pool CLASSES
voc07real_labeled           ``$IMAGESCORE_VOC07REAL`` if set, else          20 VOC
voc07real_unlabeled         ``<root>/voc2007-real/VOC2007``; split          classes
voc07real_test              ``labeled`` / ``unlabeled`` / ``test``
==========================  =============================================  ==========

``<root>`` is ``$DETECTRON2_DATASETS`` (default ``datasets``, relative to the working
directory, as in Detectron2). All are year 2007 with ``evaluator_type="pascal_voc"``; the
dataset directory of any of them is ``MetadataCatalog.get(name).dirname`` (also
:func:`dataset_root_of`). ``IMAGESCORE_VOC07REAL`` points at the ``VOC2007`` directory
itself (e.g. ``/work/shared/voc2007-real/VOC2007``).

The synthetic set is created by ``python datasets/prepare_synthetic_voc.py`` (or
:func:`generate_synthetic_voc`); see ``datasets/README.md``.

Datasets of your own (a COCO json, a folder of images, a VOC root) are named in the config's
``DATASETS.REGISTER`` and registered when it is loaded (:mod:`imagescore_det.data.coco`).
"""
import os

from .synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc, read_synthetic_meta

__all__ = [
    "HEADROOM_DATASETS",
    "SYNTHETIC_CLASSES",
    "generate_synthetic_voc",
    "read_synthetic_meta",
    "datasets_root",
    "generate_headroom_datasets",
    "register_all_imagescore_datasets",
]

SYNTHETIC_SPLITS = ("labeled", "unlabeled", "test", "trainval")
# The headroom protocol's datasets (benchmarks/bench_headroom.py, configs/synthetic/
# *_V16tiny_headroom.yaml): few labeled images and a pool 11.5x larger, where labels still
# matter (the supervised detector gains ~24 AP50 with the pool labeled). Name -> the
# generate_synthetic_voc arguments (directory <root>/<name>); registered as <name>_<split>.
# The labeled and test images depend only on the seed and the split sizes, so both variants
# share them: only the pool differs (same distribution, or 40% shifted domain).
HEADROOM_DATASETS = {
    "synthetic_headroom": dict(seed=0, num_labeled=40, num_unlabeled=460, num_test=200,
                               shifted_fraction=0.0),
    "synthetic_headroom_shifted": dict(seed=0, num_labeled=40, num_unlabeled=460, num_test=200,
                                       shifted_fraction=0.4),
}
VOC07REAL_SPLITS = ("labeled", "unlabeled", "test")


def generate_headroom_datasets(root=None):
    """Generate the :data:`HEADROOM_DATASETS` under ``root`` (default: :func:`datasets_root`)
    if absent (a no-op when they exist with these parameters). Returns their directories."""
    root = datasets_root(root)
    out = {}
    for name, params in HEADROOM_DATASETS.items():
        out[name] = generate_synthetic_voc(os.path.join(root, name), **params)["dirname"]
    return out


def datasets_root(root=None):
    """``root`` if given, else ``$DETECTRON2_DATASETS``, else ``datasets``."""
    if root is None:
        root = os.getenv("DETECTRON2_DATASETS", "datasets")
    return os.path.expanduser(os.fspath(root))


def voc07real_dirname(root=None):
    """``$IMAGESCORE_VOC07REAL`` if set, else ``<root>/voc2007-real/VOC2007``."""
    env = os.getenv("IMAGESCORE_VOC07REAL")
    if env:
        return os.path.expanduser(env)
    return os.path.join(datasets_root(root), "voc2007-real", "VOC2007")


try:
    import detectron2  # noqa: F401
except ImportError:  # the generator works without Detectron2; registration needs it
    def register_all_imagescore_datasets(root=None, replace=False):
        raise ImportError("register_all_imagescore_datasets needs Detectron2 (see README)")
else:
    from .voc import (  # noqa: F401
        VOC_CLASS_NAMES,
        check_class_names,
        dataset_domains,
        dataset_root_of,
        load_voc_dicts,
        read_split_ids,
        register_voc,
        validate_voc_split,
        voc_image_ids,
    )

    __all__ += ["VOC_CLASS_NAMES", "check_class_names", "dataset_domains", "dataset_root_of",
                "load_voc_dicts", "read_split_ids", "register_voc", "validate_voc_split", "voc_image_ids"]

    def register_all_imagescore_datasets(root=None, replace=False):
        """Register the ``synthetic_voc_*`` and ``voc07real_*`` datasets (no disk access).

        Called once at import with the environment's root. Calling it again with the same
        root is a no-op; with another root it raises, unless ``replace=True`` (which
        re-registers the names under the new root). Returns the registered names.
        """
        root = datasets_root(root)
        names = []
        synth_dir = os.path.join(root, "synthetic_voc", "VOC2007")
        synth_hint = (
            f"Generate it with `python datasets/prepare_synthetic_voc.py --root "
            f"{os.path.dirname(synth_dir)}`, or set DETECTRON2_DATASETS to the directory "
            f"that contains synthetic_voc/ (currently {root!r}).")
        for split in SYNTHETIC_SPLITS:
            name = f"synthetic_voc_{split}"
            register_voc(name, synth_dir, split, 2007, SYNTHETIC_CLASSES,
                         missing_hint=synth_hint, replace=replace)
            names.append(name)
        for dataset in HEADROOM_DATASETS:
            d = os.path.join(root, dataset, "VOC2007")
            hint = (f"Generate it with `python datasets/prepare_synthetic_voc.py --headroom "
                    f"--root {os.path.join(root, 'synthetic_voc')}` (or any benchmark of the "
                    "headroom protocol, which generates it first), or set DETECTRON2_DATASETS "
                    f"to the directory that contains {dataset}/ (currently {root!r}).")
            for split in SYNTHETIC_SPLITS:
                register_voc(f"{dataset}_{split}", d, split, 2007, SYNTHETIC_CLASSES,
                             missing_hint=hint, replace=replace)
                names.append(f"{dataset}_{split}")
        real_dir = voc07real_dirname(root)
        real_hint = (
            "Set IMAGESCORE_VOC07REAL to the real data's VOC2007 directory (on the project's "
            "machines: /work/shared/voc2007-real/VOC2007), or place it at "
            "$DETECTRON2_DATASETS/voc2007-real/VOC2007.")
        for split in VOC07REAL_SPLITS:
            name = f"voc07real_{split}"
            register_voc(name, real_dir, split, 2007, VOC_CLASS_NAMES,
                         missing_hint=real_hint, replace=replace)
            names.append(name)
        return names

    register_all_imagescore_datasets()
