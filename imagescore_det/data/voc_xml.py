"""The one Pascal VOC annotation (XML) reader (no Detectron2 import)."""
import xml.etree.ElementTree as ET


def parse_voc_xml(xml_path):
    """``(width, height, [(class name, [xmin, ymin, xmax, ymax]), ...])`` of a VOC XML, in
    the file's own 1-based pixel coordinates.

    Raises ``ValueError`` naming the file when it is not valid XML, has no usable size, or
    an object without a name or a numeric box.
    """
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise ValueError(f"Annotation {xml_path} is not valid XML ({e}). Fix or regenerate "
                         f"it, or remove its id from the split file.") from e
    root = tree.getroot()
    try:
        width = int(root.find("./size/width").text)
        height = int(root.find("./size/height").text)
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"Annotation {xml_path} has no usable <size><width>/<height> "
                         f"(positive integers are required).") from e
    if width <= 0 or height <= 0:
        raise ValueError(f"Annotation {xml_path} has a non-positive size {width}x{height}.")
    objects = []
    for obj in root.findall("object"):
        name_el = obj.find("name")
        name = name_el.text.strip() if name_el is not None and name_el.text else None
        if not name:
            raise ValueError(f"Annotation {xml_path} has an <object> without a <name>.")
        try:
            box = [float(obj.find("bndbox").find(k).text)
                   for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"Annotation {xml_path}: object {name!r} has no usable "
                             f"<bndbox> with numeric xmin/ymin/xmax/ymax.") from e
        objects.append((name, box))
    return width, height, objects


def to_detectron2_box(box):
    """A VOC box (1-based, inclusive) in Detectron2's XYXY_ABS convention, as
    ``load_voc_instances`` converts it: ``[xmin - 1, ymin - 1, xmax, ymax]``."""
    return [box[0] - 1.0, box[1] - 1.0, box[2], box[3]]
