"""Checks of a data set's files before the hours of training start (no Detectron2 import).

A semi-supervised run reads tens of thousands of files nobody has looked at. These checks
find what would stop it late or corrupt it silently, cheaply enough to run at every
trainer start (header reads: 20k images take seconds on 2 cores) and from
``tools/check_dataset.py``:

======================  =========================================================  =========
kind                    what                                                       file named
======================  =========================================================  =========
missing_directory       the VOC directory or Annotations/, JPEGImages/,             directory
                        ImageSets/Main/ is missing
missing_split           ImageSets/Main/<split>.txt does not exist                  split file
unreadable_split        the split file cannot be read or is not UTF-8               split file
empty_split             the split file lists no image id                           split file
bad_split_line          a line that cannot be an image id (NUL character)          split:line
duplicate_id            an id listed twice (the second line is named)              split:line
missing_annotation      Annotations/<id>.xml does not exist                        XML
bad_annotation          XML that does not parse, has no usable <size>, an object   XML
                        without <name> or a numeric, finite <bndbox>
unknown_class           an object whose class is not in the dataset's classes      XML
degenerate_box          xmax < xmin or ymax < ymin (zero or negative width/height  XML
                        in Detectron2's coordinates)
box_outside_image       a box more than 1 px outside the image's <size>            XML
missing_image           JPEGImages/<id>.jpg does not exist                         JPEG
unreadable_image        it exists but cannot be opened (permissions, a directory)  JPEG
empty_image             0 bytes                                                    JPEG
not_an_image            no image reader recognises it (HTML, text, ...)            JPEG
truncated_image         a JPEG that does not end with the end-of-image marker      JPEG
                        FF D9 and does not decode (cut off while copying)
corrupt_image           the header cannot be parsed, or (``deep``) the image does  JPEG
                        not decode
size_mismatch           the XML's <size> differs from the image's real size        XML
                        (after EXIF orientation, as Detectron2 reads it)
evaluator_cannot_read   (evaluation data) Detectron2's VOC evaluator's parser      XML
                        ``parse_rec`` fails on it: an object without <pose>,
                        <truncated> or <difficult>, or a non-integer value there
                        or in <bndbox> (156.5), which the loader accepts
evaluator_reads_        (evaluation data) the evaluator reads another class name    XML
differently             than the loader: ``<name>car </name>`` (the loader strips
                        it; the evaluator's "car " is no "car" ground truth)
======================  =========================================================  =========

Evaluation data (a dataset in ``DATASETS.TEST``) is also read with the evaluator's own
parser: ``check_voc(..., evaluator_parser=parse_rec)`` runs Detectron2's
``pascal_voc_evaluation.parse_rec`` on every annotation (``engine/data_checks.py`` and
``tools/check_dataset.py --as-test`` pass it) and reports, as ``bad_split_line``, a blank
line in the split file (the evaluator reads it as the image id ""). Training data is read
by the loader only, which is lenient (missing tags, fractional pixels, padded names).

Every finding names the file at fault and, for a per-image finding, the split file's line
that lists the id. Without ``deep`` an image is checked by its header (``PIL.Image.open``
reads only that) and its last two bytes; a JPEG without FF D9 at its end is decoded to tell
a cut-off file from one with data after its end. ``deep`` decodes every image, as the
data loader will.

The checks never raise on bad data: every problem becomes a :class:`Finding`.
"""
import collections
import dataclasses
import functools
import os
import stat
import time
from concurrent.futures import ProcessPoolExecutor

from .voc_xml import VOCAnnotationError, evaluator_read_problem, parse_voc_xml, to_detectron2_box

__all__ = [
    "FIXES", "IMAGE_KINDS", "BOX_KINDS", "NOTE_KINDS", "LOADER_KINDS", "EVALUATION_KINDS",
    "DataCheckError", "Finding", "CheckReport", "inspect_image", "check_voc", "check_dataset_dicts",
    "merge_reports",
    "format_findings",
]

# kind -> how to fix it (printed with the findings)
FIXES = {
    "missing_directory": "point the dataset at a Pascal VOC directory (Annotations/, JPEGImages/, "
                         "ImageSets/Main/), or set DETECTRON2_DATASETS (see datasets/README.md); "
                         "the synthetic set is created by `python datasets/prepare_synthetic_voc.py`",
    "missing_split": "write ImageSets/Main/<split>.txt (one image id per line) or use one of the "
                     "splits that exist",
    "unreadable_split": "rewrite the split file as UTF-8 text, one image id per line",
    "empty_split": "list the split's image ids in the split file (one per line), or use another "
                   "split",
    "bad_split_line": "fix or delete the line in the split file",
    "duplicate_id": "delete the repeated line from the split file (the image would be used twice)",
    "missing_annotation": "restore the XML, or delete the id's line from the split file",
    "bad_annotation": "fix or regenerate the XML, or delete the id's line from the split file",
    "unknown_class": "fix the <name> in the XML, or register the dataset with a class list that "
                     "has the class (and set MODEL.ROI_HEADS.NUM_CLASSES to its length)",
    "degenerate_box": "fix the <bndbox> (xmin <= xmax, ymin <= ymax) or delete the <object>",
    "box_outside_image": "fix the <bndbox> or the <size> (boxes are in the image's 1-based pixels)",
    "missing_image": "restore the JPEG, or delete the id's line from the split file",
    "unreadable_image": "make the file readable (permissions), or delete the id's line",
    "empty_image": "copy or download the image again, or delete the id's line",
    "not_an_image": "replace the file by the real JPEG (a failed download saves an HTML error "
                    "page under the image's name), or delete the id's line",
    "truncated_image": "copy or download the image again (it was cut off), or delete the id's line",
    "corrupt_image": "re-export or download the image again, or delete the id's line",
    "size_mismatch": "correct <size><width>/<height> in the XML to the image's real size "
                     "(Detectron2 refuses an image whose size differs from its dataset dict)",
    "evaluator_cannot_read": "Detectron2's VOC evaluator reads test annotations with parse_rec, "
                             "which needs every <object> to have <name>, <pose>, <truncated> "
                             "and <difficult> (integers) and integer <bndbox> values: add the "
                             "missing tags (<pose>Unspecified</pose>, <truncated>0</truncated>, "
                             "<difficult>0</difficult>) and write the box in whole pixels, or "
                             "delete the id's line from the test split",
    "evaluator_reads_differently": "remove the whitespace around the class name in <name> (the "
                                   "loader strips it, Detectron2's VOC evaluator does not: the "
                                   "object would be no ground truth of its class and a correct "
                                   "detection of it a false positive)",
}
SPLIT_KINDS = frozenset({"missing_directory", "missing_split", "unreadable_split", "empty_split",
                         "bad_split_line", "duplicate_id"})
ANNOTATION_KINDS = frozenset({"missing_annotation", "bad_annotation", "unknown_class"})
BOX_KINDS = frozenset({"degenerate_box", "box_outside_image"})
# found only in evaluation data (check_voc's evaluator_parser)
EVALUATION_KINDS = frozenset({"evaluator_cannot_read", "evaluator_reads_differently"})
# problems of one image's file: IMAGE_SCORE.ON_BAD_IMAGE skip leaves such a pool image out
IMAGE_KINDS = frozenset({"missing_image", "unreadable_image", "empty_image", "not_an_image",
                         "truncated_image", "corrupt_image", "size_mismatch"})
# what makes imagescore_det.data.load_voc_dicts (a registered VOC dataset's loader) raise
LOADER_KINDS = (SPLIT_KINDS - {"duplicate_id"}) | ANNOTATION_KINDS
# COCO instances json and image folders (data/coco_checks.py)
FIXES.update({
    "not_coco": "export the annotations again as a COCO instances json (an object with "
                "\"images\", \"annotations\" and \"categories\" lists) or fix the path",
    "no_images": "list the images in the json's \"images\" / put images into the folder, or "
                 "fix the path",
    "bad_image_entry": "give the json's image entry an int \"id\", a \"file_name\" and int "
                       "\"width\"/\"height\" (export again from the labeling tool)",
    "duplicate_image_id": "give every entry of \"images\" its own \"id\" (a second entry with "
                          "an id replaces the first in pycocotools)",
    "unknown_category": "use a category id listed in \"categories\", or add the category",
    "orphan_annotation": "point the annotation's \"image_id\" at an image of the json, or delete "
                         "it (Detectron2 drops it)",
    "bad_box": "write the annotation's \"bbox\" as four finite numbers [x, y, width, height]",
    "zero_size_box": "fix the annotation's \"bbox\" (width and height must be > 0) or delete it",
    "box_outside_json_size": "fix the \"bbox\" [x, y, width, height] (pixels from the top-left "
                             "corner) or the image's \"width\"/\"height\"",
    "crowd_objects": "nothing to do if intended: iscrowd 1 objects are not trained on "
                     "(Detectron2's DatasetMapper drops them) and COCOeval ignores detections "
                     "matched to them; set iscrowd 0 to train on them",
    "duplicate_image": "delete one of the copies (the pool would score and pseudo-label the "
                       "same photo twice)",
    "ignored_file": "nothing to do if intended: only files with an image extension are read",
})
ANNOTATION_KINDS = ANNOTATION_KINDS | {"not_coco", "no_images", "bad_image_entry",
                                       "duplicate_image_id", "unknown_category",
                                       "orphan_annotation", "bad_box"}
BOX_KINDS = BOX_KINDS | {"zero_size_box", "box_outside_json_size"}
IMAGE_KINDS = IMAGE_KINDS | {"duplicate_image"}
# how the data will be treated, not a problem: logged, never stop a run
NOTE_KINDS = frozenset({"crowd_objects", "ignored_file"})
assert set(FIXES) == (SPLIT_KINDS | ANNOTATION_KINDS | BOX_KINDS | IMAGE_KINDS
                      | EVALUATION_KINDS | NOTE_KINDS)

BOX_TOLERANCE = 1.0  # px outside the image a box may reach (off-by-one conventions)
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112


class DataCheckError(ValueError):
    """Data that would stop or corrupt training; the message lists the findings and fixes."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem. ``path`` is the file at fault; ``listed_in``/``line`` the split file and
    its 1-based line that list the image id (0: not about one line); ``image`` the image file
    the finding concerns (what a skip list is keyed by)."""

    kind: str
    path: str
    message: str
    listed_in: str = ""
    line: int = 0
    image_id: str = ""
    image: str = ""

    @property
    def fix(self):
        return FIXES[self.kind]

    def __str__(self):
        if self.line and self.listed_in == self.path:
            return f"{self.path}:{self.line}: {self.kind}: {self.message}"
        text = f"{self.path}: {self.kind}: {self.message}"
        if self.line:
            text += f" (id {self.image_id!r}, {self.listed_in}:{self.line})"
        return text


@dataclasses.dataclass
class CheckReport:
    """The findings of one dataset (one VOC split, or one registered dataset's dicts)."""

    dataset: str
    root: str = ""
    split: str = ""
    num_images: int = 0  # ids / dicts in the dataset
    num_checked: int = 0  # images this process checked (its shard)
    num_objects: int = 0
    findings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    deep: bool = False
    unknown_classes: dict = dataclasses.field(default_factory=dict)  # name -> objects

    @property
    def ok(self):
        return not self.findings

    def counts(self):
        return dict(collections.Counter(f.kind for f in self.findings))


# --------------------------------------------------------------------------- images
def _describe_bytes(head):
    if head.lstrip()[:1] == b"<":
        return "; it looks like HTML or XML text (a failed download?)"
    if head.startswith(b"%PDF"):
        return "; it is a PDF"
    if head.startswith(b"PK\x03\x04"):
        return "; it is a ZIP archive"
    if not head.strip(b"\x00"):
        return "; it starts with zero bytes"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "; it is text"
    return ""


def _decode_problem(image):
    """None if ``image`` decodes fully, else what went wrong."""
    try:
        image.load()
    except Exception as e:  # noqa: BLE001 - any decoder error is a finding
        return f"{type(e).__name__}: {e}"
    return None


def _oriented_size(image):
    """The size Detectron2's read_image gives: EXIF orientations 5-8 swap width and height."""
    size = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - Detectron2 ignores EXIF it cannot read, as here
        return size
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def inspect_image(path, deep=False):
    """``(size, problem)`` of one image file: ``size`` = (width, height) as Detectron2 will
    read it (None when unknown), ``problem`` = (kind, message) or None. Never raises."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, ("missing_image", "does not exist")
    except (OSError, ValueError) as e:
        return None, ("unreadable_image", f"cannot be accessed ({e})")
    if not stat.S_ISREG(st.st_mode):
        return None, ("unreadable_image", "is not a regular file")
    if st.st_size == 0:
        return None, ("empty_image", "is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, st.st_size - 2))
            ends_with_eoi = f.read(2) == JPEG_EOI
            f.seek(0)
            cut = ("does not end with the JPEG end-of-image marker FF D9 "
                   f"({st.st_size} bytes): it was cut off")
            try:
                image = Image.open(f)
            except Exception as e:  # noqa: BLE001 - header parsers raise SyntaxError, struct.error...
                if head.startswith(JPEG_SOI) and not ends_with_eoi:  # cut inside its header
                    return None, ("truncated_image", f"{cut} (inside its header: {e})")
                if isinstance(e, UnidentifiedImageError):
                    return None, ("not_an_image", f"is not an image ({st.st_size} bytes starting "
                                                  f"{head[:8].hex(' ')}{_describe_bytes(head)})")
                return None, ("corrupt_image", f"has a header that cannot be parsed "
                                               f"({type(e).__name__}: {e})")
            size = _oriented_size(image)
            if image.format == "JPEG":
                if not ends_with_eoi:
                    # cut off, or data after a complete image (some cameras append some):
                    # only decoding tells them apart, and only such files pay for it
                    f.seek(0)
                    problem = _decode_problem(image)
                    if problem is not None or ImageFile.LOAD_TRUNCATED_IMAGES:
                        return size, ("truncated_image", cut + (
                            f"; decoding stops with {problem}" if problem else ""))
                    return size, None
            if deep:
                problem = _decode_problem(image)
                if problem is not None:
                    return size, ("corrupt_image", f"does not decode ({problem})")
    except OSError as e:
        return None, ("unreadable_image", f"cannot be read ({e})")
    return size, None


# --------------------------------------------------------------------------- VOC splits
def _split_file(dirname, split):
    return os.path.join(dirname, "ImageSets", "Main", split + ".txt")


def _layout_findings(dirname, split):
    if not os.path.isdir(dirname):
        return [Finding("missing_directory", dirname, "the dataset directory does not exist")]
    out = []
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        p = os.path.join(dirname, sub)
        if not os.path.isdir(p):
            nested = os.path.join(dirname, "VOC2007")
            hint = f" (it contains {nested}: use that directory)" if os.path.isdir(nested) else ""
            out.append(Finding("missing_directory", p, f"does not exist: {dirname} is not a "
                                                       f"Pascal VOC directory{hint}"))
    if out:
        return out
    path = _split_file(dirname, split)
    if not os.path.isfile(path):
        main = os.path.dirname(path)
        existing = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt"))
        return [Finding("missing_split", path, f"does not exist; splits in {main}: "
                                               f"{', '.join(existing) or '(none)'}")]
    return []


def _read_split_lines(path):
    """``([(line number, id)], findings)``: the non-blank lines as read_split_ids reads them."""
    entries, findings, first = [], [], {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(enumerate(f, 1))
    except (OSError, UnicodeDecodeError) as e:
        return [], [Finding("unreadable_split", path, f"cannot be read as UTF-8 text ({e})")]
    for number, line in lines:
        image_id = line.strip()
        if not image_id:
            continue
        if "\0" in image_id:
            findings.append(Finding("bad_split_line", path, f"{image_id!r} holds a NUL "
                                                            "character", path, number, image_id))
            continue
        if image_id in first:
            findings.append(Finding("duplicate_id", path, f"id {image_id!r} is also on line "
                                                          f"{first[image_id]}", path, number,
                                    image_id))
            continue
        first[image_id] = number
        entries.append((number, image_id))
    if not entries and not findings:
        findings.append(Finding("empty_split", path, "lists no image ids"))
    return entries, findings


def _blank_line_findings(path):
    """Blank lines of a split file: Detectron2's VOC evaluator reads every line (stripped)
    as an image id, and fails on the id "" (``Annotations/.xml``)."""
    with open(path, encoding="utf-8") as f:
        return [Finding("bad_split_line", path, "a blank line: Detectron2's VOC evaluator reads "
                                                "it as the image id '' and fails on "
                                                "Annotations/.xml", path, number)
                for number, line in enumerate(f, 1) if not line.strip()]


def _evaluator_findings(ann, objects, evaluator_parser, where):
    """``ann`` read by the evaluator's parser, against the loader's ``objects``: at most one
    finding (the first problem), naming the object."""
    parse = getattr(evaluator_parser, "__wrapped__", evaluator_parser)  # not its lru_cache
    try:
        records = parse(ann)
    except Exception as e:  # noqa: BLE001 - whatever stops the evaluator is the finding
        reason = evaluator_read_problem(ann) or f"{type(e).__name__}: {e}"
        return [Finding("evaluator_cannot_read", ann, f"Detectron2's VOC evaluator (parse_rec) "
                                                      f"cannot read it: {reason}", **where)]
    if len(records) != len(objects):
        return [Finding("evaluator_reads_differently", ann, (
            f"the evaluator reads {len(records)} objects, the loader {len(objects)}"), **where)]
    for k, (record, (name, box)) in enumerate(zip(records, objects), 1):
        read_box = [float(v) for v in record["bbox"]]
        if record["name"] != name or read_box != box:
            return [Finding("evaluator_reads_differently", ann, (
                f"object #{k}: Detectron2's VOC evaluator reads class {record['name']!r} box "
                f"{read_box}, the loader {name!r} {box}: the evaluator would not count it as "
                f"{name!r} ground truth (a perfect detection of it scores AP 0)"), **where)]
    return []


def _check_voc_image(dirname, split_path, number, image_id, classes, deep, evaluator_parser=None):
    """(findings, number of objects, unknown class names) of one listed image id."""
    ann = os.path.join(dirname, "Annotations", image_id + ".xml")
    jpg = os.path.join(dirname, "JPEGImages", image_id + ".jpg")
    where = dict(listed_in=split_path, line=number, image_id=image_id, image=jpg)
    findings, unknown, xml_size, objects = [], collections.Counter(), None, []
    try:
        width, height, objects = parse_voc_xml(ann)
    except FileNotFoundError:
        fields = image_id.split()
        hint = (f"; the line has {len(fields)} fields: Main/<split>.txt lists one id per line "
                "(is this a per-class file such as aeroplane_trainval.txt?)"
                if len(fields) > 1 else "")
        findings.append(Finding("missing_annotation", ann, "does not exist" + hint, **where))
    except VOCAnnotationError as e:
        findings.append(Finding("bad_annotation", ann, e.reason, **where))
    except (OSError, ValueError) as e:  # a directory, no permission, a NUL in the path
        findings.append(Finding("bad_annotation", ann, f"cannot be read ({e})", **where))
    else:
        xml_size = (width, height)
        for k, (name, box) in enumerate(objects, 1):
            if name not in classes:
                unknown[name] += 1
                if unknown[name] == 1:
                    findings.append(Finding("unknown_class", ann, (
                        f"object #{k} has class {name!r}, which is not one of the dataset's "
                        f"{len(classes)} classes"), **where))
            x0, y0, x1, y1 = to_detectron2_box(box)
            if x1 <= x0 or y1 <= y0:
                findings.append(Finding("degenerate_box", ann, (
                    f"object #{k} {name!r} has <bndbox> {box}: width {x1 - x0:g}, height "
                    f"{y1 - y0:g} (xmax - xmin + 1 and ymax - ymin + 1 must be > 0)"), **where))
            elif (x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE
                  or y1 > height + BOX_TOLERANCE):
                findings.append(Finding("box_outside_image", ann, (
                    f"object #{k} {name!r} has <bndbox> {box} outside the {width}x{height} "
                    "image"), **where))
        if evaluator_parser is not None:
            findings += _evaluator_findings(ann, objects, evaluator_parser, where)
    size, problem = inspect_image(jpg, deep)
    if problem is not None:
        findings.append(Finding(problem[0], jpg, problem[1], **where))
    elif xml_size is not None and size is not None and tuple(size) != xml_size:
        findings.append(Finding("size_mismatch", ann, (
            f"<size> says {xml_size[0]}x{xml_size[1]} (width x height) but {jpg} is "
            f"{size[0]}x{size[1]}"), **where))
    return findings, len(objects), unknown


def _run(fn, items, workers):
    """``[fn(item) for item in items]``, in ``workers`` processes when more than one (the
    checks are CPU-bound Python: threads would not help). ``fn`` must be picklable."""
    workers = int(workers or 1)
    if workers <= 1 or len(items) < 256:
        return [fn(item) for item in items]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=max(16, len(items) // (8 * workers))))


def _check_voc_entry(dirname, split_path, classes, deep, evaluator_parser, entry):
    return _check_voc_image(dirname, split_path, entry[0], entry[1], classes, deep,
                            evaluator_parser)


def check_voc(dirname, split, class_names, deep=False, dataset=None, workers=None, shard=None,
              evaluator_parser=None):
    """Check the Pascal VOC split ``dirname/ImageSets/Main/<split>.txt`` and every image id it
    lists: its XML, its boxes and classes, and its JPEG (header, end marker, size; a full
    decode with ``deep``). Returns a :class:`CheckReport`; never raises on bad data.

    ``shard=(rank, world)`` checks only every ``world``-th image from ``rank`` (the split-level
    findings come from rank 0); :func:`merge_reports` joins the shards. ``workers`` > 1
    checks the images in that many processes (default: in this one).

    ``evaluator_parser``: for evaluation data, the parser the evaluator reads annotations
    with (Detectron2's ``pascal_voc_evaluation.parse_rec``; picklable for ``workers``). Each
    XML it cannot read is an ``evaluator_cannot_read`` finding, each it reads with another
    class name or box than the loader an ``evaluator_reads_differently`` one, and a blank
    line in the split file a ``bad_split_line``."""
    t0 = time.perf_counter()
    dirname = os.fspath(dirname)
    rank, world = shard or (0, 1)
    report = CheckReport(dataset=dataset or f"{dirname}:{split}", root=dirname, split=split,
                         deep=deep)
    findings = _layout_findings(dirname, split)
    if findings:
        report.findings = findings if rank == 0 else []
        report.seconds = time.perf_counter() - t0
        return report
    split_path = _split_file(dirname, split)
    entries, split_findings = _read_split_lines(split_path)
    report.num_images = len(entries)
    mine = entries[rank::world]
    report.num_checked = len(mine)
    classes = frozenset(class_names)
    if evaluator_parser is not None and entries:  # (read as UTF-8 already)
        split_findings = split_findings + _blank_line_findings(split_path)
    results = _run(functools.partial(_check_voc_entry, dirname, split_path, classes, deep,
                                     evaluator_parser), mine, workers)
    report.findings = (split_findings if rank == 0 else []) + [f for r in results for f in r[0]]
    report.num_objects = sum(r[1] for r in results)
    unknown = collections.Counter()
    for r in results:
        unknown.update(r[2])
    report.unknown_classes = dict(unknown)
    report.findings.sort(key=_order)
    report.seconds = time.perf_counter() - t0
    return report


def _order(finding):
    return (finding.line, finding.kind in IMAGE_KINDS, finding.path)


# --------------------------------------------------------------------------- other datasets
def _dict_findings(dataset, num_classes, deep, entry):
    index, d = entry
    file_name = str(d.get("file_name", ""))
    where = dict(listed_in=f"dataset {dataset}", line=index + 1,
                 image_id=str(d.get("image_id", "")), image=file_name)
    findings = []
    if not file_name:
        return [Finding("missing_image", f"dataset {dataset}", f"dict #{index + 1} has no "
                                                               "file_name", **where)], 0
    size, problem = inspect_image(file_name, deep)
    if problem is not None:
        findings.append(Finding(problem[0], file_name, problem[1], **where))
    expected = (d.get("width"), d.get("height"))
    if size is not None and None not in expected and tuple(size) != tuple(expected):
        findings.append(Finding("size_mismatch", file_name, (
            f"the dataset dict says {expected[0]}x{expected[1]} (width x height) but the image "
            f"is {size[0]}x{size[1]}"), **where))
    anns = d.get("annotations") or []
    width, height = expected
    for k, a in enumerate(anns, 1):
        try:
            mode, box = int(a.get("bbox_mode", 0)), [float(v) for v in a["bbox"]]
            category = int(a.get("category_id", 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            findings.append(Finding("bad_annotation", file_name, f"annotation #{k} has no "
                                                                 "numeric bbox", **where))
            continue
        if num_classes is not None and not 0 <= category < num_classes:
            findings.append(Finding("unknown_class", file_name, (
                f"annotation #{k} has category_id {category}, not in [0, {num_classes})"),
                **where))
        if mode not in (0, 1) or len(box) != 4:  # only XYXY_ABS and XYWH_ABS are checked
            continue
        x0, y0, x1, y1 = box if mode == 0 else (box[0], box[1], box[0] + box[2], box[1] + box[3])
        if not x1 > x0 or not y1 > y0:
            findings.append(Finding("degenerate_box", file_name, f"annotation #{k} has bbox "
                                                                 f"{box} (mode {mode})", **where))
        elif width and height and (x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE
                                   or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE):
            findings.append(Finding("box_outside_image", file_name, (
                f"annotation #{k} has bbox {box} outside the {width}x{height} image"), **where))
    return findings, len(anns)


def check_dataset_dicts(dicts, dataset, num_classes=None, deep=False, workers=None, shard=None):
    """Check a registered dataset that is not a VOC split, from its dataset dicts: every
    image file as :func:`inspect_image`, its size against the dict's, its boxes
    (XYXY_ABS / XYWH_ABS), category ids, duplicate image ids, an empty dataset."""
    t0 = time.perf_counter()
    rank, world = shard or (0, 1)
    report = CheckReport(dataset=dataset, num_images=len(dicts), deep=deep)
    findings = []
    if rank == 0:
        if not dicts:
            findings.append(Finding("empty_split", f"dataset {dataset}", "has no images"))
        first = {}
        for i, d in enumerate(dicts):
            key = d.get("image_id")
            if key is None:
                continue
            if key in first:
                findings.append(Finding("duplicate_id", str(d.get("file_name", "")), (
                    f"image_id {key!r} of dict #{i + 1} is also dict #{first[key] + 1}'s"),
                    f"dataset {dataset}", i + 1, str(key), str(d.get("file_name", ""))))
            else:
                first[key] = i
    mine = list(enumerate(dicts))[rank::world]
    report.num_checked = len(mine)
    results = _run(functools.partial(_dict_findings, dataset, num_classes, deep), mine, workers)
    report.findings = findings + [f for r in results for f in r[0]]
    report.num_objects = sum(r[1] for r in results)
    report.findings.sort(key=_order)
    report.seconds = time.perf_counter() - t0
    return report


def merge_reports(reports):
    """One report from the shards of one dataset (``shard=(rank, world)``)."""
    reports = list(reports)
    out = dataclasses.replace(reports[0], findings=[], unknown_classes={})
    unknown = collections.Counter()
    out.num_checked = out.num_objects = 0
    for r in reports:
        out.findings.extend(r.findings)
        out.num_checked += r.num_checked
        out.num_objects += r.num_objects
        unknown.update(r.unknown_classes)
    out.unknown_classes = dict(unknown)
    out.seconds = max(r.seconds for r in reports)
    out.findings.sort(key=_order)
    return out


def format_findings(findings, limit=10, indent="  "):
    """The first ``limit`` findings one a line, ``... and N more``, then the fix of each kind."""
    findings = list(findings)
    lines = [indent + str(f) for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"{indent}... and {len(findings) - limit} more")
    kinds = sorted({f.kind for f in findings})
    if kinds:
        lines.append("How to fix:")
        lines += [f"{indent}{kind}: {FIXES[kind]}" for kind in kinds]
    return "\n".join(lines)
