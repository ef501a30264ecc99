"""Loader, data check and evaluator read the test set alike (issue 19, items 4, 5 and 8).

* The check of evaluation data (``DATASETS.TEST``) runs Detectron2's own VOC parser
  (``parse_rec``) on every annotation, so a file the evaluator cannot read stops the run
  before the first iteration, not at the first evaluation after the warm-up.
* A ``<name>`` with surrounding whitespace is stripped by the loader but not by the
  evaluator: the check stops the run (a perfect detection of it would score AP 0).
* The paired bootstrap scores a class without ground truth as ``voc_eval`` does.
"""
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import faults
from conftest import TINY_CONFIG, tiny_cfg_opts
from test_evidence import _evaluate
from test_known_answers import _write_voc
from test_reader_properties import FAST, scratch  # noqa: F401 - a fixture
from test_reliability_data import _tool, unique

from detectron2.data import DatasetCatalog
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval

from imagescore_det.data import SYNTHETIC_CLASSES, register_voc
from imagescore_det.data.checks import IMAGE_KINDS, DataCheckError, check_voc
from imagescore_det.evaluation.bootstrap import (IOU_THRESHOLDS, PreparedRun, compare,
                                                 format_markdown, mean_ap)
from imagescore_det.evaluation.detections import (detections_path, load_detections,
                                                  write_detections)

CLASSES = list(SYNTHETIC_CLASSES)


def _edit(path, pattern, repl):
    return faults._edit_xml(path, lambda t: re.sub(pattern, repl, t, count=1))


def _test_ids_with_objects(d, n):
    from imagescore_det.data.voc_xml import parse_voc_xml

    ids = [i for i in faults.split_ids(d, "test") if parse_voc_xml(faults.xml(d, i))[2]]
    assert len(ids) >= n
    return ids[:n]


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        return True
    return False


def _cfg(tmp_path, labeled, test):
    from imagescore_det.engine import load_config

    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path / "out") + [
        "DATASETS.TRAIN", f"('{labeled}',)", "DATASETS.TEST", f"('{test}',)"])
    cfg.freeze()
    return cfg


def _perfect_predictions(dataset):
    """{image_id: [(box, score, class)]}: every ground-truth box, score 1."""
    return {r["image_id"]: [(a["bbox"], 1.0, a["category_id"]) for a in r["annotations"]]
            for r in dataset}


# --------------------------------------------------------------------------- item 4
def test_test_set_check_runs_the_evaluators_parser(tiny_voc, tmp_path, capsys):
    """XML without <pose> / <difficult>, or with a non-integer <bndbox> value: the loader
    reads it, Detectron2's evaluator does not. As a test set the check stops the run
    before the first iteration naming the file and the fix; as training data it passes."""
    from imagescore_det.engine import Trainer
    from imagescore_det.engine.data_checks import check_registered_dataset

    d = faults.copy_voc(tiny_voc["dirname"], tmp_path / "VOC2007")
    no_pose, half_pixel, no_difficult = (faults.xml(d, i) for i in _test_ids_with_objects(d, 3))
    _edit(no_pose, r"\s*<pose>[^<]*</pose>", "")
    _edit(half_pixel, r"<xmin>(\d+)</xmin>", r"<xmin>\g<1>.5</xmin>")
    _edit(no_difficult, r"\s*<difficult>[^<]*</difficult>", "")
    parse_rec.cache_clear()
    for path in (no_pose, half_pixel, no_difficult):  # what the evaluator would hit
        assert _raises(parse_rec.__wrapped__, path), path

    # training data: the lenient loader reads these files; no finding
    assert check_voc(d, "test", CLASSES).findings == []
    # evaluation data: one finding per file, naming the tag
    report = check_voc(d, "test", CLASSES, evaluator_parser=parse_rec)
    by_path = {f.path: f for f in report.findings}
    assert set(by_path) == {no_pose, half_pixel, no_difficult}
    assert {f.kind for f in report.findings} == {"evaluator_cannot_read"}
    assert "no <pose>" in by_path[no_pose].message
    assert "<xmin>" in by_path[half_pixel].message and ".5'" in by_path[half_pixel].message
    assert "no <difficult>" in by_path[no_difficult].message
    assert "parse_rec" in by_path[no_pose].fix and "integer" in by_path[no_pose].fix

    names = {s: unique(s) for s in ("labeled", "test")}
    for split, name in names.items():
        register_voc(name, d, split, 2007, CLASSES)
    assert check_registered_dataset(names["test"]).findings == []
    assert len(check_registered_dataset(names["test"], evaluation=True).findings) == 3
    # trainer start: stops before the data loader and the model are built
    with pytest.raises(DataCheckError) as e:
        Trainer(_cfg(tmp_path, names["labeled"], names["test"]))
    msg = str(e.value)
    assert f"test dataset '{names['test']}' (DATASETS.TEST): 3 problem(s)" in msg
    assert f"{no_pose}: evaluator_cannot_read" in msg and "evaluator_cannot_read: " in msg
    # the same split also used for training is checked as a test set
    both = _cfg(tmp_path, names["test"], names["test"])
    with pytest.raises(DataCheckError, match="evaluator_cannot_read"):
        Trainer(both)

    # the tool: --as-test for names and directories, the roles for --config-file
    tool = _tool()
    assert tool.main([names["test"], "--workers", "1"]) == 0
    assert tool.main([names["test"], "--as-test", "--workers", "1"]) == 1
    assert tool.main([d, "--split", "test", "--as-test", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"{half_pixel}: evaluator_cannot_read" in out
    assert tool.main(["--config-file", TINY_CONFIG, "--opts", "DATASETS.TRAIN",
                      f"('{names['labeled']}',)", "DATASETS.TEST", f"('{names['test']}',)"]) == 1
    out = capsys.readouterr().out
    assert "training would stop on 3" in out and f"{no_difficult}: evaluator_cannot_read" in out


VARIANTS = {  # edit of one object's XML -> what the evaluator reads
    "as written": (None, None),
    "no pose": (r"<pose>[^<]*</pose>", ""),
    "empty pose": (r"<pose>[^<]*</pose>", "<pose/>"),
    "no truncated": (r"<truncated>[^<]*</truncated>", ""),
    "truncated 0.0": (r"<truncated>[^<]*</truncated>", "<truncated>0.0</truncated>"),
    "no difficult": (r"<difficult>[^<]*</difficult>", ""),
    "difficult empty": (r"<difficult>[^<]*</difficult>", "<difficult></difficult>"),
    "xmin 156.5": (r"<xmin>[^<]*</xmin>", "<xmin>15.5</xmin>"),
    "xmin padded": (r"<xmin>[^<]*</xmin>", "<xmin> 15 </xmin>"),
    "ymax 4e1": (r"<ymax>[^<]*</ymax>", "<ymax>4e1</ymax>"),
    "no xmax": (r"<xmax>[^<]*</xmax>", ""),
    "name padded": (r"<name>([^<]*)</name>", r"<name>\g<1> </name>"),
    "name newline": (r"<name>([^<]*)</name>", "<name>\n\\g<1>\n</name>"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_evaluation_check_agrees_with_parse_rec(tmp_path, variant):
    """Each variant: a finding exactly when Detectron2's parse_rec raises, or reads a class
    name or box other than the loader's."""
    from imagescore_det.data.voc_xml import parse_voc_xml

    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 48)).save(root / "JPEGImages" / "a.jpg")
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    obj = ("<object><name>disc</name><pose>Left</pose><truncated>0</truncated>"
           "<difficult>0</difficult><bndbox><xmin>10</xmin><ymin>12</ymin><xmax>30</xmax>"
           "<ymax>40</ymax></bndbox></object>")
    pattern, repl = VARIANTS[variant]
    edited = obj if pattern is None else re.sub(pattern, repl, obj, count=1)
    xml = root / "Annotations" / "a.xml"
    xml.write_text("<annotation><size><width>64</width><height>48</height></size>"
                   f"{obj}{edited}</annotation>")  # the edit in object #2
    findings = check_voc(str(root), "test", CLASSES, evaluator_parser=parse_rec).findings
    try:
        read = parse_rec.__wrapped__(str(xml))
    except Exception:  # noqa: BLE001
        # a file the loader cannot read either is a bad_annotation (it stops the run too)
        kind = "bad_annotation" if _raises(parse_voc_xml, str(xml)) else "evaluator_cannot_read"
        assert [f.kind for f in findings] == [kind], variant
        assert findings[0].path == str(xml) and "object #2" in findings[0].message
        return
    loader = parse_voc_xml(str(xml))[2]
    same = [(o["name"], [float(v) for v in o["bbox"]]) for o in read] == loader
    assert [f.kind for f in findings] == ([] if same else ["evaluator_reads_differently"])
    if not same:
        assert "object #2" in findings[0].message


# --------------------------------------------------------------------------- item 5
def test_class_name_with_whitespace_stops_the_run_instead_of_scoring_zero(tiny_voc, tmp_path):
    """``<name>disc </name>`` in the test set: the loader reads "disc", Detectron2's
    evaluator "disc " (no "disc" ground truth), so a perfect detection scores AP50 0. The
    check stops the run naming the file and the fix; after the fix AP50 is 100."""
    from imagescore_det.engine import Trainer

    d = faults.copy_voc(tiny_voc["dirname"], tmp_path / "VOC2007")
    names = {s: unique(s) for s in ("labeled", "test")}
    for split, name in names.items():
        register_voc(name, d, split, 2007, CLASSES)
    dataset_before = DatasetCatalog.get(names["test"])
    present = {CLASSES[a["category_id"]] for r in dataset_before for a in r["annotations"]}
    cls = sorted(present)[0]
    edited = []
    for image_id in faults.split_ids(d, "test"):
        path = faults.xml(d, image_id)
        text = open(path).read()
        if f"<name>{cls}</name>" in text:
            open(path, "w").write(text.replace(f"<name>{cls}</name>", f"<name>{cls} </name>"))
            edited.append(path)
    assert edited
    parse_rec.cache_clear()
    # the loader still reads the class: the same dicts as before the edit
    assert DatasetCatalog.get(names["test"]) == dataset_before
    preds = _perfect_predictions(dataset_before)

    # the evidence: Detectron2's evaluator and the bootstrap (same parser) score it 0
    with np.errstate(invalid="ignore"):  # voc_eval's recall 0/0: no "disc" truth is left
        bbox = _evaluate(names["test"], dataset_before, preds, tmp_path / "inference_ws")
    assert bbox[f"AP50-{cls}"] == 0.0
    full = PreparedRun(load_detections(detections_path(str(tmp_path / "inference_ws"),
                                                       names["test"]))).full_set_ap()
    assert full[CLASSES.index(cls), 0] == 0.0

    # the check names every such file, and the trainer stops before the first iteration
    report = check_voc(d, "test", CLASSES, evaluator_parser=parse_rec)
    assert {f.path for f in report.findings} == set(edited)
    assert {f.kind for f in report.findings} == {"evaluator_reads_differently"}
    assert f"'{cls} '" in report.findings[0].message
    assert "whitespace" in report.findings[0].fix
    with pytest.raises(DataCheckError) as e:
        Trainer(_cfg(tmp_path, names["labeled"], names["test"]))
    assert f"{edited[0]}: evaluator_reads_differently" in str(e.value)

    # the fix the finding gives: strip the name; then the check passes and AP50 is 100
    for path in edited:
        text = open(path).read()
        open(path, "w").write(text.replace(f"<name>{cls} </name>", f"<name>{cls}</name>"))
    parse_rec.cache_clear()
    assert check_voc(d, "test", CLASSES, evaluator_parser=parse_rec).findings == []
    bbox = _evaluate(names["test"], dataset_before, preds, tmp_path / "inference_fixed")
    assert bbox[f"AP50-{cls}"] == pytest.approx(100, abs=1e-9)


# --------------------------------------------------------------------------- item 8
def _handmade(root, truth):
    _write_voc(root, truth)
    return (os.path.join(root, "Annotations", "{}.xml"),
            os.path.join(root, "ImageSets", "Main", "test.txt"))


TRUTH = {"img0": [("a", [10, 10, 50, 50]), ("b", [5, 60, 40, 90])],
         "img1": [("a", [20, 20, 45, 45])],
         "img2": [("b", [30, 30, 70, 70])]}


def test_a_class_without_ground_truth_counts_as_the_evaluator_counts_it(tmp_path):
    """Classes a, b, c; c has no ground truth; perfect detections of a and b. Detectron2's
    evaluator (VOC2007 11-point): AP50 per class 100, 100, 0 -> mean 66.67. The bootstrap's
    full-set AP50 and every resample's must be the same (they were 100.0)."""
    root = str(tmp_path / "VOC2007")
    _handmade(root, TRUTH)
    name = unique("no_truth")
    register_voc(name, root, "test", 2007, ["a", "b", "c"])
    dataset = [{"image_id": i, "height": 100, "width": 100,
                "annotations": [{"bbox": [b[0] - 1, b[1] - 1, b[2], b[3]],
                                 "category_id": "abc".index(c)} for c, b in objs]}
               for i, objs in TRUTH.items()]
    parse_rec.cache_clear()
    out = tmp_path / "inference"
    with np.errstate(invalid="ignore"):  # voc_eval's recall 0/0 of class c
        bbox = _evaluate(name, dataset, _perfect_predictions(dataset), out)
    assert [bbox["AP50-a"], bbox["AP50-b"], bbox["AP50-c"]] == pytest.approx([100, 100, 0],
                                                                            abs=1e-9)
    assert bbox["AP50"] == pytest.approx(200 / 3, abs=1e-12)
    ev = load_detections(detections_path(str(out), name))
    result = compare(ev, ev, resamples=50)
    assert result["AP50"]["a"] == result["AP50"]["b"] == bbox["AP50"]
    assert result["AP"]["a"] == bbox["AP"]
    assert result["classes_without_ground_truth"] == ["c"]
    run = PreparedRun(ev)
    every_image_once = mean_ap(run.resampled_ap(np.ones((1, 3))))
    assert every_image_once["AP50"][0] == pytest.approx(200 / 3, abs=1e-9)
    # a resample without img1 and img2 has no "b" truth either: voc_eval scores b 0 there
    only_img0 = run.resampled_ap(np.array([[2.0, 0.0, 0.0]]))[0]
    assert only_img0[:, 0].tolist() == pytest.approx([100, 100, 0], abs=1e-9)
    assert only_img0[2, 0] == 0.0
    text = format_markdown(result)
    assert "Classes without ground truth in the test set" in text and "scored 0" in text


@pytest.mark.parametrize("use_07_metric", [True, False])
@pytest.mark.parametrize("stray", [False, True])
def test_class_without_truth_equals_voc_eval_on_both_metrics(tmp_path, use_07_metric, stray):
    """The exact and the resampling path give voc_eval's AP for a class without ground
    truth: 0, or NaN with the area metric when the class has detections (voc_eval's 0/0)."""
    anno, image_set = _handmade(str(tmp_path / "voc"), TRUTH)
    parse_rec.cache_clear()
    predictions = {0: ["img0 0.900 10.0 10.0 50.0 50.0", "img1 0.800 20.0 20.0 45.0 45.0"],
                   1: ["img2 0.700 30.0 30.0 70.0 70.0"],
                   2: ["img1 0.600 1.0 1.0 20.0 20.0"] if stray else []}
    det_template = str(tmp_path / "{}.txt")
    for c, cls in enumerate("abc"):
        with open(det_template.format(cls), "w") as f:
            f.write("\n".join(predictions[c]))
    path = str(tmp_path / "detections_hand.json")
    write_detections(path, "hand", ["a", "b", "c"], image_set, anno, use_07_metric, predictions)
    run = PreparedRun(load_detections(path))
    full = run.full_set_ap()
    fast = run.resampled_ap(np.ones((1, 3)))[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.array([[voc_eval(det_template, anno, image_set, cls, ovthresh=t,
                                       use_07_metric=use_07_metric)[2] * 100
                              for t in IOU_THRESHOLDS] for cls in "abc"])
    np.testing.assert_array_equal(full, expected)
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-9)
    assert np.isnan(expected[2]).all() == (stray and not use_07_metric)


# --------------------------------------------------------------------------- fuzzing item 4/5
_values = st.one_of(st.integers(-5, 300).map(str), st.sampled_from(
    ["", " ", "1.5", "156.5", " 7 ", "+4", "1_0", "0x10", "1e1", "abc", "\u00a0 8", "3."]))


@st.composite
def _object_xml(draw):
    name = draw(st.sampled_from(CLASSES)) + draw(st.sampled_from(["", " ", "\n\t"]))
    name = draw(st.sampled_from(["", " "])) + name
    parts = [f"<name>{name}</name>"]
    for tag in ("pose", "truncated", "difficult"):
        choice = draw(st.sampled_from(["int", "int", "value", "empty", "none"]))
        if choice != "none":
            text = {"int": "0", "value": draw(_values), "empty": ""}[choice]
            parts.append(f"<{tag}>{text}</{tag}>" if text else f"<{tag}/>")
    coords = [draw(st.one_of(st.integers(1, 60).map(str), _values)) for _ in range(4)]
    if draw(st.integers(0, 9)):
        parts.append("<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(
            ("xmin", "ymin", "xmax", "ymax"), coords)) + "</bndbox>")
    draw(st.randoms()).shuffle(parts)
    return "<object>" + "".join(parts) + "</object>"


@FAST(150)
@given(objects=st.lists(_object_xml(), max_size=3),
       split=st.sampled_from(["a\n", "a\n\n", "\na", "a\n  \n", "a"]))
def test_evaluation_check_equals_parse_rec_by_fuzzing(scratch, objects, split):
    """Random objects (tags present or not, integers, decimals, junk, padded names), the
    split file with or without blank lines: the check of evaluation data is clean exactly
    when Detectron2's VOC evaluator reads every listed file as the loader does."""
    from imagescore_det.data.voc_xml import parse_voc_xml

    root = tempfile.mkdtemp(dir=scratch)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub))
    xml = os.path.join(root, "Annotations", "a.xml")
    with open(xml, "w") as f:
        f.write("<annotation><size><width>64</width><height>64</height></size>"
                + "".join(objects) + "</annotation>")
    with open(os.path.join(root, "ImageSets", "Main", "s.txt"), "w") as f:
        f.write(split)
    report = check_voc(root, "s", CLASSES, evaluator_parser=parse_rec)
    kinds = {f.kind for f in report.findings} - IMAGE_KINDS - {"degenerate_box",
                                                              "box_outside_image"}
    with open(os.path.join(root, "ImageSets", "Main", "s.txt")) as f:  # as voc_eval reads it
        evaluated_ids = [x.strip() for x in f.readlines()]
    try:
        loader = parse_voc_xml(xml)[2]
    except ValueError:
        assert kinds == {"bad_annotation"} | ({"bad_split_line"} & kinds)
        return
    try:
        read = [(r["name"], [float(v) for v in r["bbox"]])
                for i in evaluated_ids for r in parse_rec.__wrapped__(
                    os.path.join(root, "Annotations", i + ".xml"))]
        evaluator_ok = read == loader
    except Exception:  # noqa: BLE001 - what stops the evaluator
        evaluator_ok = False
    assert (not kinds) == evaluator_ok, (kinds, objects, split)
    assert ("bad_split_line" in kinds) == ("" in evaluated_ids)
