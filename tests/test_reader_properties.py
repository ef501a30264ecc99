"""Property tests (hypothesis) of the readers that take files from outside: the VOC XML
reader (data/voc_xml.parse_voc_xml), the validated VOC loader (data/voc.load_voc_dicts, what
a registered VOC dataset loads) with the data check that must predict it
(data/checks.check_voc), and the pseudo-label dataset reader (data/pseudo.load_pseudo_dataset).

On random and mutated XML / split files / JSON they may only raise their documented errors,
naming the file, and whatever they return must be what they document. Each property runs a
few hundred derandomized cases in the normal suite (575 over the file) and, under the
``slow`` marker, 10,000 random cases for each "only documented errors" property and 2,000
for each known-answer one (34,000): ``python -m pytest tests/test_reader_properties.py -m slow``.
"""
import json
import math
import os
import re
import shutil
import tempfile
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagescore_det.data.checks import IMAGE_KINDS, LOADER_KINDS, check_voc
from imagescore_det.data.voc_xml import VOCAnnotationError, parse_voc_xml, to_detectron2_box

_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example]

def FAST(n):  # the normal suite: derandomized, a few hundred cases over the file
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=_CHECKS)


def SLOW(n=10_000):  # -m slow
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=_CHECKS)


CLASSES = ["disc", "square"]


@pytest.fixture(scope="module")
def scratch():
    # in memory where there is one: the cases write thousands of small files
    path = tempfile.mkdtemp(prefix="reader_props_",
                            dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- XML strategies
# text XML 1.0 can carry (expat turns \r into \n, so leave it out of names)
_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                  blacklist_characters="\r\ufffe\uffff"), max_size=12)
_name = _xml_text.filter(lambda s: s.strip() != "")
_coordinate = st.one_of(st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False, width=64))
_junk_values = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "0",
                                "-5", "abc", "12abc", "0x10", "1_000", "  7 ", "\uff11\uff12",
                                "1.5", "3.", "+4", "\u00a0 8", "1" * 5000])


def _pad(draw, value):
    """A value as XML text, sometimes with whitespace around it (int()/float() strip it)."""
    return draw(st.sampled_from(["", " ", "\n\t"])) + str(value) + \
        draw(st.sampled_from(["", " ", "\n"]))


@st.composite
def valid_annotations(draw):
    """(XML text, the (width, height, objects) parse_voc_xml must return)."""
    width, height = draw(st.integers(1, 10**5)), draw(st.integers(1, 10**5))
    objects = []
    parts = ["<annotation>", "<folder>VOC2007</folder>",
             f"<size><width>{_pad(draw, width)}</width><height>{_pad(draw, height)}</height>"
             "<depth>3</depth></size>"]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(CLASSES + [" disc ", "\tsquare\n"]), _name))
        box = [draw(_coordinate) for _ in range(4)]
        objects.append((name.strip(), [float(v) for v in box]))
        extra = draw(st.sampled_from(["", "<pose>Left</pose>", "<difficult>1</difficult>"]))
        coords = "".join(f"<{k}>{_pad(draw, v)}</{k}>"
                         for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object>{extra}<name>{escape(name)}</name><bndbox>{coords}</bndbox>"
                     "</object>")
    parts.append("</annotation>")
    return "".join(parts), (width, height, objects)


@st.composite
def mutated_annotations(draw):
    """A valid annotation with one to three mutations: values replaced by junk, elements
    dropped or duplicated, the text cut off, characters inserted."""
    text = draw(valid_annotations())[0]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "drop", "duplicate", "cut", "insert"]))
        tags = re.findall(r"<(\w+)>", text)
        if kind == "value" and tags:
            tag = draw(st.sampled_from(tags))
            text = re.sub(rf"<{tag}>[^<]*</{tag}>", f"<{tag}>{escape(draw(_junk_values))}</{tag}>",
                          text, count=1)
        elif kind == "drop" and tags:
            tag = draw(st.sampled_from(tags))
            text = re.sub(rf"<{tag}>.*?</{tag}>", "", text, count=1, flags=re.S)
        elif kind == "duplicate" and tags:
            tag = draw(st.sampled_from(tags))
            m = re.search(rf"<{tag}>.*?</{tag}>", text, flags=re.S)
            if m:
                text = text[:m.end()] + m.group(0) + text[m.end():]
        elif kind == "cut":
            text = text[:draw(st.integers(0, len(text)))]
        else:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(["<", "&", "]]>", "\x00", "\ud7ff", "<a>",
                                                     "</b>", "&amp;", "<!--", "\ufeff"])) + text[at:]
    return text


_TAGS = ["annotation", "size", "width", "height", "object", "name", "bndbox", "xmin", "ymin",
         "xmax", "ymax", "x"]


def _element(children):
    return st.builds(lambda tag, text, kids: (tag, text, kids), st.sampled_from(_TAGS),
                     st.one_of(_junk_values, _xml_text), st.lists(children, max_size=4))


@st.composite
def random_trees(draw):
    """Random element trees over VOC's tag names (any nesting, any text)."""
    tree = draw(st.recursive(st.builds(lambda tag, text: (tag, text, []),
                                       st.sampled_from(_TAGS), st.one_of(_junk_values, _xml_text)),
                             _element, max_leaves=20))

    def render(node):
        tag, text, kids = node
        return f"<{tag}>{escape(text)}{''.join(render(k) for k in kids)}</{tag}>"

    return render(tree)


xml_documents = st.one_of(valid_annotations().map(lambda v: v[0]), mutated_annotations(),
                          random_trees(), st.text(max_size=200),
                          st.binary(max_size=200))


def _write(path, content):
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- parse_voc_xml
def check_parse_known_answer(scratch, case):
    text, expected = case
    path = os.path.join(scratch, "valid.xml")
    _write(path, text)
    assert parse_voc_xml(path) == expected


def check_parse_only_documented_errors(scratch, document):
    path = os.path.join(scratch, "any.xml")
    _write(path, document)
    try:
        width, height, objects = parse_voc_xml(path)
    except VOCAnnotationError as e:  # the documented error: a ValueError naming the file
        assert isinstance(e, ValueError) and path in str(e) and e.path == path
        return
    assert type(width) is int and type(height) is int and width > 0 and height > 0
    for name, box in objects:
        assert isinstance(name, str) and name == name.strip() and name
        assert len(box) == 4 and all(type(v) is float and math.isfinite(v) for v in box)


@FAST(100)
@given(case=valid_annotations())
def test_parse_voc_xml_known_answers(scratch, case):
    check_parse_known_answer(scratch, case)


@FAST(150)
@given(document=xml_documents)
def test_parse_voc_xml_raises_only_its_documented_error(scratch, document):
    check_parse_only_documented_errors(scratch, document)


@pytest.mark.slow
@SLOW(2_000)
@given(case=valid_annotations())
def test_parse_voc_xml_known_answers_10k(scratch, case):
    check_parse_known_answer(scratch, case)


@pytest.mark.slow
@SLOW()
@given(document=xml_documents)
def test_parse_voc_xml_raises_only_its_documented_error_10k(scratch, document):
    check_parse_only_documented_errors(scratch, document)


def test_parse_voc_xml_found_by_fuzzing(tmp_path):
    """Cases the fuzz found or that guard the reader's documented contract."""
    path = str(tmp_path / "a.xml")
    size = "<size><width>10</width><height>8</height></size>"
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{}</xmax><ymax>5</ymax></bndbox>"
    _write(path, f"<annotation>{size}<object><name> disc\t</name>{box.format(4)}</object>"
                 "</annotation>")
    assert parse_voc_xml(path) == (10, 8, [("disc", [1.0, 1.0, 4.0, 5.0])])  # stripped
    for bad in ("nan", "inf", "1e999"):
        _write(path, f"<annotation>{size}<object><name>disc</name>{box.format(bad)}</object>"
                     "</annotation>")
        with pytest.raises(VOCAnnotationError, match="non-finite"):
            parse_voc_xml(path)
    with pytest.raises(FileNotFoundError):
        parse_voc_xml(str(tmp_path / "absent.xml"))
    with pytest.raises(OSError):
        parse_voc_xml(str(tmp_path))


# --------------------------------------------------------------------------- VOC directories
_ids = st.sampled_from(["a", "b", "c", "000001"])


@st.composite
def voc_directories(draw):
    """A description of a small VOC directory: split file lines, an XML (or none) per id."""
    ids = draw(st.lists(_ids, min_size=0, max_size=3, unique=True))
    lines = list(ids)
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(
            ["", "   ", "a", "d", "a b", "b\t-1", "x\x00y", " c "])))
    xmls = {}
    for image_id in set(line.strip() for line in lines) | set(ids):
        choice = draw(st.sampled_from(["valid", "valid", "mutated", "tree", "missing"]))
        if choice == "valid":
            text, _ = draw(valid_annotations())
            if draw(st.booleans()):  # mostly the dataset's classes
                text = re.sub(r"<name>[^<]*</name>",
                              lambda m: f"<name>{draw(st.sampled_from(CLASSES))}</name>", text)
            xmls[image_id] = text
        elif choice == "mutated":
            xmls[image_id] = draw(mutated_annotations())
        elif choice == "tree":
            xmls[image_id] = draw(random_trees())
    layout = draw(st.sampled_from(["ok"] * 12 + ["no_annotations", "no_split", "latin1"]))
    return {"lines": lines, "xmls": xmls, "layout": layout}


def _make_voc(root, spec):
    d = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(d, sub))
    for image_id, text in spec["xmls"].items():
        if "\x00" not in image_id and image_id:
            _write(os.path.join(d, "Annotations", image_id + ".xml"), text)
    split = os.path.join(d, "ImageSets", "Main", "s.txt")
    if spec["layout"] != "no_split":
        content = "".join(line + "\n" for line in spec["lines"])
        _write(split, content.encode("latin-1", "replace") + b"\xe9\n"
               if spec["layout"] == "latin1" else content)
    if spec["layout"] == "no_annotations":
        shutil.rmtree(os.path.join(d, "Annotations"))
    return d


def check_loader_and_checker_agree(scratch, spec):
    from imagescore_det.data.voc import load_voc_dicts

    root = tempfile.mkdtemp(dir=scratch)
    try:
        d = _make_voc(root, spec)
        report = check_voc(d, "s", CLASSES)  # never raises
        loader_kinds = {f.kind for f in report.findings} & LOADER_KINDS
        try:
            dicts = load_voc_dicts(d, "s", CLASSES)
        except (FileNotFoundError, ValueError, OSError) as e:  # the documented errors
            assert d in str(e), str(e)  # names a file of the dataset
            assert loader_kinds, (str(e), report.findings)  # the check predicted it
            return
        assert not loader_kinds, report.findings
        listed = [line.strip() for line in spec["lines"] if line.strip()]
        assert [x["image_id"] for x in dicts] == listed
        for x in dicts:
            w, h, objects = parse_voc_xml(os.path.join(d, "Annotations", x["image_id"] + ".xml"))
            assert (x["width"], x["height"]) == (w, h)
            assert [(a["category_id"], a["bbox"]) for a in x["annotations"]] == [
                (CLASSES.index(n), to_detectron2_box(b)) for n, b in objects]
        # what the check adds beyond the loader: images (none were written), boxes, duplicates
        assert {f.kind for f in report.findings} <= IMAGE_KINDS | {
            "degenerate_box", "box_outside_image", "duplicate_id"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_voc_loader_found_by_fuzzing(tmp_path):
    """What the loader did before it read every XML through parse_voc_xml."""
    from imagescore_det.data.voc import load_voc_dicts

    spec = {"lines": ["a"], "layout": "ok", "xmls": {"a": (
        "<annotation><size><width>10</width><height>8</height></size><object><name> disc "
        "</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox>"
        "</object></annotation>")}}
    d = _make_voc(str(tmp_path / "one"), spec)
    # load_voc_instances took the name unstripped: ValueError "' disc ' is not in list"
    (x,) = load_voc_dicts(d, "s", CLASSES)
    assert [(a["category_id"], a["bbox"]) for a in x["annotations"]] == [(0, [0.0, 1.0, 3.0, 4.0])]
    assert check_voc(d, "s", CLASSES).findings[0].kind == "missing_image"  # nothing else
    # a split file that is not UTF-8: UnicodeDecodeError, naming no file
    d = _make_voc(str(tmp_path / "latin"), dict(spec, layout="latin1"))
    with pytest.raises(ValueError, match=re.escape(os.path.join(d, "ImageSets", "Main", "s.txt"))):
        load_voc_dicts(d, "s", CLASSES)
    assert [f.kind for f in check_voc(d, "s", CLASSES).findings] == ["unreadable_split"]


@FAST(100)
@given(spec=voc_directories())
def test_voc_loader_raises_only_documented_errors_and_the_check_predicts_it(scratch, spec):
    check_loader_and_checker_agree(scratch, spec)


@pytest.mark.slow
@SLOW()
@given(spec=voc_directories())
def test_voc_loader_raises_only_documented_errors_and_the_check_predicts_it_10k(scratch, spec):
    check_loader_and_checker_agree(scratch, spec)


# --------------------------------------------------------------------------- pseudo datasets
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def pseudo_dicts(draw):
    dicts = []
    for k in range(draw(st.integers(0, 4))):
        height, width = draw(st.integers(1, 5000)), draw(st.integers(1, 5000))

        def box():  # XYXY_ABS inside the image, as predictions are
            x1, x2 = sorted(draw(st.floats(0, width)) for _ in range(2))
            y1, y2 = sorted(draw(st.floats(0, height)) for _ in range(2))
            return [x1, y1, x2, y2]

        d = {"file_name": draw(st.text(min_size=1, max_size=20)), "image_id": str(k),
             "height": height, "width": width,
             "annotations": [{"bbox": box(), "bbox_mode": 0,
                              "category_id": draw(st.integers(0, 19)),
                              "score": draw(st.floats(0, 1))}
                             for _ in range(draw(st.integers(0, 3)))]}
        dicts.append(d)
    return dicts


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


@st.composite
def mutated_pseudo_files(draw):
    """A valid file's JSON with one to three values replaced by random JSON or dropped."""
    data = {"format_version": 1, "name": "x_pseudo_r1", "round": 1,
            "dataset_dicts": draw(pseudo_dicts())}
    for _ in range(draw(st.integers(1, 3))):
        node, key = data, None
        while True:  # walk down to a random container
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and draw(st.booleans()):
                node = child
                continue
            break
        if key is None:
            continue
        if draw(st.booleans()):
            node[key] = draw(_json)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
    return json.dumps(data)


pseudo_documents = st.one_of(mutated_pseudo_files(), _json.map(json.dumps),
                             st.text(max_size=100), st.binary(max_size=100))


def check_pseudo_round_trip(scratch, dicts):
    from detectron2.structures import BoxMode

    from imagescore_det.data.pseudo import load_pseudo_dataset, save_pseudo_dataset

    path = os.path.join(scratch, "valid.json")
    save_pseudo_dataset(path, dicts, {"name": "x_pseudo_r1", "round": 1})
    back, header = load_pseudo_dataset(path)
    assert header == {"format_version": 1, "name": "x_pseudo_r1", "round": 1}
    assert back == dicts
    assert all(type(a["bbox_mode"]) is BoxMode for d in back for a in d["annotations"])


def check_pseudo_only_documented_errors(scratch, document):
    from detectron2.structures import BoxMode

    from imagescore_det.data.pseudo import load_pseudo_dataset

    path = os.path.join(scratch, "any.json")
    _write(path, document)
    try:
        dicts, header = load_pseudo_dataset(path)
    except RuntimeError as e:  # the documented error, naming the file
        assert path in str(e)
        return
    assert isinstance(dicts, list) and isinstance(header, dict)
    for d in dicts:
        assert isinstance(d["file_name"], str) and d["file_name"]
        for a in d["annotations"]:
            assert len(a["bbox"]) == 4 and all(math.isfinite(v) for v in a["bbox"])
            assert type(a["bbox_mode"]) is BoxMode and a["category_id"] >= 0


@FAST(75)
@given(dicts=pseudo_dicts())
def test_pseudo_dataset_round_trip(scratch, dicts):
    check_pseudo_round_trip(scratch, dicts)


@FAST(150)
@given(document=pseudo_documents)
def test_pseudo_reader_raises_only_its_documented_error(scratch, document):
    check_pseudo_only_documented_errors(scratch, document)


@pytest.mark.slow
@SLOW(2_000)
@given(dicts=pseudo_dicts())
def test_pseudo_dataset_round_trip_10k(scratch, dicts):
    check_pseudo_round_trip(scratch, dicts)


@pytest.mark.slow
@SLOW()
@given(document=pseudo_documents)
def test_pseudo_reader_raises_only_its_documented_error_10k(scratch, document):
    check_pseudo_only_documented_errors(scratch, document)


def test_pseudo_reader_found_by_fuzzing(tmp_path):
    """What the reader crashed on before the schema check, with its message now."""
    from imagescore_det.data.pseudo import load_pseudo_dataset

    path = str(tmp_path / "p.json")
    image = '{"file_name": "a", "image_id": "a", "annotations": '
    cases = {
        '{"format_version": 1}': "'dataset_dicts' is missing",  # was KeyError
        '{"format_version": 1, "dataset_dicts": [1]}': r"dataset_dicts\[0\] is a int",
        '{"format_version": 1, "dataset_dicts": [{"file_name": "a"}]}':  # was KeyError
            r"dataset_dicts\[0\] \(a\) has no 'image_id'",
        '{"format_version": 1, "dataset_dicts": [{"file_name": "a", "image_id": "a"}]}':
            r"'annotations' is missing",  # was KeyError
        '{"format_version": 1, "dataset_dicts": [' + image +
        '[{"bbox": [0, 0, 1, 1], "bbox_mode": 9, "category_id": 0}]}]}':  # was ValueError
            r"annotation 0: bbox_mode 9 is not a Detectron2 BoxMode",
        '{"format_version": 1, "dataset_dicts": [' + image +
        '[{"bbox": [0, NaN, 1, 1], "bbox_mode": 0, "category_id": 0}]}]}':  # was accepted
            r"bbox \[0, nan, 1, 1\] holds something other than finite numbers",
        '{"format_version": 1, "dataset_dicts": [' + image +
        '[{"bbox": [0, 0, 1, 1e999999], "bbox_mode": 0, "category_id": 0}]}]}':  # inf
            r"bbox \[0, 0, 1, inf\] holds something other than finite numbers",
        '{"format_version": 1, "dataset_dicts": [' + image +
        '[{"bbox": [0, 0, 1, 1' + "0" * 400 + '], "bbox_mode": 0, "category_id": 0}]}]}':
            r"bbox \[0, 0, 1, 1000.* holds something other than finite",  # was OverflowError
        '{"format_version": 1, "dataset_dicts": ' + "[" * 100_000 + "]" * 100_000 + "}":
            "Cannot read",  # was RecursionError
    }
    for text, message in cases.items():
        _write(path, text)
        with pytest.raises(RuntimeError, match=message) as e:
            load_pseudo_dataset(path)
        assert path in str(e.value) and "Delete its round folder" in str(e.value)
