"""The one Pascal VOC annotation (XML) reader (no Detectron2 import)."""
import math
import xml.etree.ElementTree as ET


class VOCAnnotationError(ValueError):
    """An annotation XML that cannot be used. ``path`` is the file, ``reason`` what is wrong
    with it (the message is ``"Annotation <path> <reason>"``)."""

    def __init__(self, path, reason):
        super().__init__(f"Annotation {path} {reason}")
        self.path = path
        self.reason = reason


def parse_voc_xml(xml_path):
    """``(width, height, [(class name, [xmin, ymin, xmax, ymax]), ...])`` of a VOC XML, in
    the file's own 1-based pixel coordinates. Class names are stripped of surrounding
    whitespace; coordinates are finite floats.

    Raises ``VOCAnnotationError`` (a ``ValueError``) naming the file when it is not valid
    XML, has no usable size (positive integers), or an object without a name or a finite
    numeric box; ``OSError`` (``FileNotFoundError`` when missing) when it cannot be read.
    """
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise VOCAnnotationError(xml_path, f"is not valid XML ({e}). Fix or regenerate it, or "
                                           "remove its id from the split file.") from e
    except RecursionError as e:  # a pathological nesting depth
        raise VOCAnnotationError(xml_path, "is nested too deeply to be a VOC annotation.") from e
    root = tree.getroot()
    try:
        width = int(root.find("./size/width").text)
        height = int(root.find("./size/height").text)
    except (AttributeError, TypeError, ValueError) as e:
        raise VOCAnnotationError(xml_path, "has no usable <size><width>/<height> (positive "
                                           "integers are required).") from e
    if width <= 0 or height <= 0:
        raise VOCAnnotationError(xml_path, f"has a non-positive size {width}x{height}.")
    objects = []
    for number, obj in enumerate(root.findall("object"), 1):
        name_el = obj.find("name")
        name = name_el.text.strip() if name_el is not None and name_el.text else None
        if not name:
            raise VOCAnnotationError(xml_path, f"has an <object> (#{number}) without a <name>.")
        try:
            box = [float(obj.find("bndbox").find(k).text)
                   for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError) as e:
            raise VOCAnnotationError(xml_path, f"has an object #{number} {name!r} without a "
                                               "usable <bndbox> (numeric xmin/ymin/xmax/ymax).") from e
        if not all(math.isfinite(v) for v in box):
            raise VOCAnnotationError(xml_path, f"has an object #{number} {name!r} with a "
                                               f"non-finite <bndbox> {box}.")
        objects.append((name, box))
    return width, height, objects


def _is_int(text):
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True


def evaluator_read_problem(xml_path):
    """Why Detectron2's VOC evaluator (``pascal_voc_evaluation.parse_rec``) cannot read
    ``xml_path``, in words: the first field it reads, in its order, that is missing or not an
    integer (each <object>'s <name>, <pose>, <truncated>, <difficult>, <bndbox> xmin / ymin /
    xmax / ymax); None when it finds none. Only explains: whether the evaluator can read a
    file is decided by running its parser (``data.checks.check_voc(evaluator_parser=...)``)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError, ValueError, RecursionError) as e:
        return f"it cannot be parsed as XML ({e})"
    for number, obj in enumerate(root.findall("object"), 1):
        name = obj.find("name")
        label = f"object #{number}" + (f" {name.text!r}" if name is not None and name.text else "")
        if name is None:
            return f"{label} has no <name>"
        if obj.find("pose") is None:
            return f"{label} has no <pose>"
        box = obj.find("bndbox")
        integers = [(f"<{tag}>", obj.find(tag)) for tag in ("truncated", "difficult")]
        if box is None:
            integers.append(("<bndbox>", None))
        else:
            integers += [(f"<bndbox><{tag}>", box.find(tag))
                         for tag in ("xmin", "ymin", "xmax", "ymax")]
        for where, element in integers:
            if element is None:
                return f"{label} has no {where}"
            if not _is_int(element.text):
                return f"{label} has {where} {element.text!r}, which is not an integer"
    return None


def to_detectron2_box(box):
    """A VOC box (1-based, inclusive) in Detectron2's XYXY_ABS convention, as
    ``load_voc_instances`` converts it: ``[xmin - 1, ymin - 1, xmax, ymax]``."""
    return [box[0] - 1.0, box[1] - 1.0, box[2], box[3]]
