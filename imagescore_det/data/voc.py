"""Pascal VOC datasets registered through Detectron2's registration, with input validation.

``register_voc`` calls ``detectron2.data.datasets.register_pascal_voc`` (so the metadata
``thing_classes``/``dirname``/``year``/``split`` that ``PascalVOCDetectionEvaluator`` reads
are set exactly as Detectron2 sets them) and then swaps the catalog's loader for
:func:`load_voc_dicts`, which validates the split and its annotations and builds the dicts
``load_voc_instances`` would build, through the project's one XML reader
(:func:`~imagescore_det.data.voc_xml.parse_voc_xml`; unlike ``load_voc_instances`` it strips
class names and refuses non-finite boxes). Registration itself never touches the disk;
validation happens when ``DatasetCatalog.get(name)`` loads the dataset. The loader does not
open the JPEGs: images are checked by :mod:`imagescore_det.data.checks` (at trainer start and
by ``tools/check_dataset.py``) and per image during a selection round, so that an unlabeled
pool with a bad image can still be loaded and the image skipped (``IMAGE_SCORE.ON_BAD_IMAGE``).
A synthetic dataset's dicts also carry each image's ``"domain"`` ("typical"/"shifted").

Errors name the offending file and say how to fix it:

* ``FileNotFoundError``: the dataset directory, one of its sub-directories, the split file
  (the split files that do exist are listed), an annotation XML, or (``validate_voc_split``
  with ``check_images=True``) a JPEG is missing;
* ``ValueError``: an empty split, an unparsable XML, an XML without a usable ``size`` or
  ``bndbox`` (``VOCAnnotationError``), or an object whose class is not in ``class_names``
  (the XML file, the class, the known classes and a class list that would fit are named).
* ``OSError``: an annotation XML that exists but cannot be read (e.g. no permission).
"""
import os
import threading

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES
from detectron2.data.datasets.pascal_voc import register_pascal_voc
from detectron2.structures import BoxMode

from .synthetic import META_FILENAME, SYNTHETIC_CLASSES, read_synthetic_meta
from .voc_xml import parse_voc_xml, to_detectron2_box

__all__ = [
    "VOC_CLASS_NAMES",
    "register_voc",
    "load_voc_dicts",
    "check_class_names",
    "validate_voc_split",
    "read_split_ids",
    "dataset_root_of",
    "voc_image_ids",
    "dataset_domains",
]

DEFAULT_MISSING_HINT = (
    "Set DETECTRON2_DATASETS to the directory that holds your datasets (default: ./datasets, "
    "relative to the working directory; see datasets/README.md). The synthetic dataset is "
    "created by `python datasets/prepare_synthetic_voc.py`."
)

# name -> (normalized dirname, split, year, class_names) of what register_voc registered
_REGISTERED = {}
_LOCK = threading.Lock()


def _split_path(dirname, split):
    return os.path.join(dirname, "ImageSets", "Main", split + ".txt")


def read_split_ids(dirname, split):
    """Image ids listed in ``dirname/ImageSets/Main/<split>.txt`` (validated: the directory
    and the split file must exist)."""
    _check_layout(dirname, DEFAULT_MISSING_HINT)
    path = _split_path(dirname, split)
    if not os.path.isfile(path):
        main = os.path.dirname(path)
        existing = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt"))
        raise FileNotFoundError(
            f"Split file {path} does not exist. Splits available in {main}: "
            f"{', '.join(existing) if existing else '(none)'}. Register the dataset with one "
            f"of those splits, or write {split}.txt (one image id per line).")
    try:
        with open(path, encoding="utf-8") as f:
            ids = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise ValueError(f"Split file {path} is not UTF-8 text ({e}); it must list one image id "
                         "per line.") from e
    for image_id in ids:
        if "\0" in image_id:
            raise ValueError(f"Split file {path} lists {image_id!r}, which holds a NUL character "
                             "and cannot name a file. Fix the line.")
    return ids


def _check_layout(dirname, missing_hint):
    if not os.path.isdir(dirname):
        raise FileNotFoundError(f"Dataset directory {dirname} does not exist. {missing_hint}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        p = os.path.join(dirname, sub)
        if not os.path.isdir(p):
            nested = os.path.join(dirname, "VOC2007")
            extra = (f" It contains {nested}: point the dataset at that directory instead."
                     if os.path.isdir(nested) else "")
            raise FileNotFoundError(
                f"{p} does not exist: {dirname} is not a Pascal VOC directory (it needs "
                f"Annotations/, JPEGImages/ and ImageSets/Main/).{extra} {missing_hint}")


def _suggest_classes(found, dirname):
    """A class list that covers every class name ``found`` in the annotations."""
    meta = read_synthetic_meta(dirname)
    if meta is not None and found <= set(meta.get("classes", ())):
        return ("the classes in " + os.path.join(dirname, META_FILENAME), meta["classes"])
    if found <= set(SYNTHETIC_CLASSES):
        return ("imagescore_det.data.SYNTHETIC_CLASSES", list(SYNTHETIC_CLASSES))
    if found <= set(VOC_CLASS_NAMES):
        return ("the 20 Pascal VOC classes (detectron2.data.datasets.pascal_voc.CLASS_NAMES)",
                list(VOC_CLASS_NAMES))
    return ("the classes found in this split's annotations", sorted(found))


def validate_voc_split(dirname, split, class_names, missing_hint=DEFAULT_MISSING_HINT,
                       check_images=True):
    """Check everything ``load_voc_instances(dirname, split, class_names)`` relies on.

    Returns the split's image ids. Raises ``FileNotFoundError``/``ValueError`` naming the
    file at fault (see the module docstring).
    """
    _check_layout(dirname, missing_hint)
    ids = read_split_ids(dirname, split)
    if not ids:
        raise ValueError(f"Split file {_split_path(dirname, split)} lists no image ids.")
    known = set(class_names)
    found, first_unknown = set(), None
    for image_id in ids:
        xml_path = os.path.join(dirname, "Annotations", image_id + ".xml")
        if not os.path.isfile(xml_path):
            raise FileNotFoundError(
                f"Annotation {xml_path} does not exist (image id {image_id!r} is listed in "
                f"{_split_path(dirname, split)}). Restore it or remove the id from the split.")
        if check_images:
            jpg = os.path.join(dirname, "JPEGImages", image_id + ".jpg")
            if not os.path.isfile(jpg):
                raise FileNotFoundError(
                    f"Image {jpg} does not exist (image id {image_id!r} is listed in "
                    f"{_split_path(dirname, split)}).")
        _, _, objects = parse_voc_xml(xml_path)
        for name, _ in objects:
            found.add(name)
            if name not in known and first_unknown is None:
                first_unknown = (xml_path, name)
    if first_unknown is not None:
        xml_path, name = first_unknown
        unknown = sorted(found - known)
        source, suggestion = _suggest_classes(found, dirname)
        raise ValueError(
            f"Annotation {xml_path} names class {name!r}, which is not in class_names "
            f"{list(class_names)}. Classes of split {split!r} missing from class_names: "
            f"{unknown}. Use {source}: class_names={suggestion}.")
    return ids


def check_class_names(dirname, split, class_names):
    """Check that every object in ``dirname``'s ``split`` has a class in ``class_names``.

    Returns ``{class_name: number of objects}`` over the split (classes of ``class_names``
    that never occur are included with 0). Raises ``ValueError`` naming the first XML file
    with an unknown class, the class, the known classes and a class list that fits.
    """
    validate_voc_split(dirname, split, class_names, check_images=False)
    counts = {c: 0 for c in class_names}
    for image_id in read_split_ids(dirname, split):
        _, _, objects = parse_voc_xml(os.path.join(dirname, "Annotations", image_id + ".xml"))
        for name, _ in objects:
            counts[name] += 1
    return counts


def _voc_dict(dirname, image_id, class_names):
    """One image's dataset dict, as ``load_voc_instances`` builds it (box ``[xmin - 1,
    ymin - 1, xmax, ymax]``, XYXY_ABS), read with :func:`parse_voc_xml`."""
    w, h, objects = parse_voc_xml(os.path.join(dirname, "Annotations", image_id + ".xml"))
    anns = [{"category_id": class_names.index(n),
             "bbox": to_detectron2_box(b), "bbox_mode": BoxMode.XYXY_ABS}
            for n, b in objects]
    return {"file_name": os.path.join(dirname, "JPEGImages", image_id + ".jpg"),
            "image_id": image_id, "height": h, "width": w, "annotations": anns}


def load_voc_dicts(dirname, split, class_names, missing_hint=DEFAULT_MISSING_HINT):
    """The dataset dicts of ``dirname``'s ``split`` (what a ``register_voc`` dataset loads):
    :func:`validate_voc_split` (without opening the JPEGs), then one dict per image id in
    split-file order. Raises only the errors the module docstring lists."""
    class_names = list(class_names)
    ids = validate_voc_split(dirname, split, class_names, missing_hint, check_images=False)
    return _with_domains(dirname, [_voc_dict(dirname, i, class_names) for i in ids])


def _make_loader(dirname, split, class_names, missing_hint):
    def load():
        return load_voc_dicts(dirname, split, class_names, missing_hint)

    return load


def _with_domains(dirname, dicts):
    """Put each image's ``"domain"`` (synthetic data: "typical"/"shifted", from
    ``synthetic_meta.json``) into its dataset dict; other datasets are returned as they are."""
    meta = read_synthetic_meta(dirname)
    if meta is None:
        return dicts
    domains = meta["domains"]
    for d in dicts:
        domain = domains.get(str(d["image_id"]))
        if domain is not None:
            d["domain"] = domain
    return dicts


def register_voc(name, dirname, split, year=2007, class_names=VOC_CLASS_NAMES,
                 missing_hint=None, replace=False):
    """Register a Pascal VOC split as Detectron2 dataset ``name`` (lazily: no disk access).

    Goes through ``detectron2.data.datasets.register_pascal_voc`` (metadata
    ``thing_classes``, ``dirname``, ``year``, ``split``; ``evaluator_type`` is set to
    ``"pascal_voc"`` as Detectron2's builtin VOC datasets do), then replaces the catalog's
    loader by :func:`load_voc_dicts` (:func:`validate_voc_split`, then the dicts).

    Idempotent: registering ``name`` again with the same dirname/split/year/class_names is a
    no-op; with different ones it raises ``ValueError`` unless ``replace=True`` (which
    removes the old registration and its metadata first). A name registered by other code
    is also an error unless ``replace=True``.

    ``missing_hint`` is appended to the error raised when ``dirname`` does not exist (say
    which script or environment variable provides the data).
    """
    dirname = os.fspath(dirname)
    key = (os.path.normpath(dirname), str(split), int(year), tuple(class_names))
    with _LOCK:
        if name in _REGISTERED or name in DatasetCatalog.list():
            if not replace:
                old = _REGISTERED.get(name)
                if old == key:
                    return
                what = ("dirname={!r}, split={!r}, year={!r}, class_names={!r}".format(*old)
                        if old else "by other code (not imagescore_det.data.register_voc)")
                raise ValueError(
                    f"Dataset {name!r} is already registered {what}; requested "
                    f"dirname={dirname!r}, split={split!r}, year={year!r}, "
                    f"class_names={list(class_names)!r}. Use another name, or pass "
                    f"replace=True to re-register it.")
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
            _REGISTERED.pop(name, None)
        register_pascal_voc(name, dirname, split, int(year), list(class_names))
        DatasetCatalog.remove(name)
        DatasetCatalog.register(
            name, _make_loader(dirname, str(split), list(class_names),
                               missing_hint or DEFAULT_MISSING_HINT))
        MetadataCatalog.get(name).set(evaluator_type="pascal_voc")
        _REGISTERED[name] = key


def dataset_root_of(name):
    """The VOC directory (containing Annotations/, JPEGImages/, ImageSets/) of a registered
    VOC dataset: ``MetadataCatalog.get(name).dirname``."""
    meta = MetadataCatalog.get(name)
    dirname = getattr(meta, "dirname", None)
    if dirname is None:
        raise KeyError(f"Dataset {name!r} has no 'dirname' metadata: it is not a registered "
                       f"Pascal VOC dataset. Registered: {DatasetCatalog.list()}")
    return dirname


def voc_image_ids(name):
    """Image ids of a registered VOC dataset's split, read from its split file (cheap:
    no annotation is parsed)."""
    meta = MetadataCatalog.get(name)
    return read_split_ids(dataset_root_of(name), meta.split)


def dataset_domains(name):
    """``{image_id: "typical" | "shifted"}`` for a registered synthetic dataset's split
    (from ``synthetic_meta.json``), or None when the dataset has no synthetic metadata."""
    meta = read_synthetic_meta(dataset_root_of(name))
    if meta is None:
        return None
    domains = meta["domains"]
    return {i: domains[i] for i in voc_image_ids(name)}
