"""Bad data: the checks before training (data/checks.py, engine/data_checks.py,
tools/check_dataset.py) and bad images met during a selection round (engine/bad_images.py),
with IMAGE_SCORE.ON_BAD_IMAGE skip | error, on one rank and on two."""
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import faults
from conftest import REPO, TINY_CONFIG, tiny_cfg_opts

from imagescore_det.data.checks import (DataCheckError, check_dataset_dicts, check_voc,
                                        inspect_image, merge_reports)

TOOL = os.path.join(REPO, "tools", "check_dataset.py")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
_COUNTER = [0]


def unique(prefix):
    _COUNTER[0] += 1
    return f"rel_{prefix}_{os.getpid()}_{_COUNTER[0]}"


@pytest.fixture(scope="module")
def clean_voc(tmp_path_factory):
    """A small synthetic VOC set (never modified: tests corrupt copies of it)."""
    from imagescore_det.data import generate_synthetic_voc

    root = str(tmp_path_factory.mktemp("clean_voc"))
    meta = generate_synthetic_voc(root, seed=5, num_labeled=10, num_unlabeled=16, num_test=4,
                                  min_size=72, max_size=96, min_obj_size=16, max_obj_size=36,
                                  max_objects=3)
    return meta["dirname"]


def classes():
    from imagescore_det.data import SYNTHETIC_CLASSES

    return list(SYNTHETIC_CLASSES)


def _with_objects(dirname, ids):
    from imagescore_det.data.voc_xml import parse_voc_xml

    return [i for i in ids if parse_voc_xml(faults.xml(dirname, i))[2]]


def plant_faults(dirname):
    """Corrupt the labeled split of ``dirname`` with one fault of each kind; returns the
    expected findings {(kind, file, split line)} without and with --deep."""
    from imagescore_det.data.voc_xml import parse_voc_xml

    split = os.path.join(dirname, "ImageSets", "Main", "labeled.txt")
    ids = faults.split_ids(dirname, "labeled")
    with_objects = _with_objects(dirname, ids)
    i = {name: k for k, name in enumerate(ids)}
    bad_xml_ids = [x for x in with_objects][:4]  # objects needed for class/box faults
    rest = [x for x in ids if x not in bad_xml_ids]
    a, b, c, d, e, f = rest[:6]
    g, h, k, m = bad_xml_ids
    expected = set()

    def line(image_id):
        return i[image_id] + 1

    faults.truncate(faults.jpg(dirname, a))
    expected.add(("truncated_image", faults.jpg(dirname, a), line(a)))
    faults.zero_bytes(faults.jpg(dirname, b))
    expected.add(("empty_image", faults.jpg(dirname, b), line(b)))
    faults.html_page(faults.jpg(dirname, c))
    expected.add(("not_an_image", faults.jpg(dirname, c), line(c)))
    os.remove(faults.jpg(dirname, d))
    expected.add(("missing_image", faults.jpg(dirname, d), line(d)))
    faults.break_xml(faults.xml(dirname, e))
    expected.add(("bad_annotation", faults.xml(dirname, e), line(e)))
    w, hh, _ = parse_voc_xml(faults.xml(dirname, f))
    faults.set_size(faults.xml(dirname, f), w + 7, hh)
    expected.add(("size_mismatch", faults.xml(dirname, f), line(f)))
    faults.set_first_class(faults.xml(dirname, g), "hexagon")
    expected.add(("unknown_class", faults.xml(dirname, g), line(g)))
    faults.set_first_box(faults.xml(dirname, h), 30, 10, 20, 40)  # xmax < xmin
    expected.add(("degenerate_box", faults.xml(dirname, h), line(h)))
    w, _, _ = parse_voc_xml(faults.xml(dirname, k))
    faults.set_first_box(faults.xml(dirname, k), 1, 1, w + 50, 10)
    expected.add(("box_outside_image", faults.xml(dirname, k), line(k)))
    # the split file: id m listed twice (line 11), and an id with no files (line 12)
    faults.write_split(dirname, "labeled", ids + [m, "999999"])
    expected.add(("duplicate_id", split, len(ids) + 1))
    expected.add(("missing_annotation", faults.xml(dirname, "999999"), len(ids) + 2))
    expected.add(("missing_image", faults.jpg(dirname, "999999"), len(ids) + 2))
    # decodes badly but has a good header and FF D9 at its end: only --deep sees it
    faults.break_huffman(faults.jpg(dirname, m))
    deep = expected | {("corrupt_image", faults.jpg(dirname, m), line(m))}
    return expected, deep


def found(report):
    return {(f.kind, f.path, f.line) for f in report.findings}


# --------------------------------------------------------------------------- the checker
def test_planted_faults_give_exactly_these_findings(clean_voc, tmp_path):
    d = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    assert check_voc(d, "labeled", classes()).findings == []  # the clean copy
    expected, expected_deep = plant_faults(d)
    report = check_voc(d, "labeled", classes())
    assert found(report) == expected  # 12 findings, each naming its file and split line
    assert report.num_images == 11 and report.unknown_classes == {"hexagon": 1}
    deep = check_voc(d, "labeled", classes(), deep=True)
    assert found(deep) == expected_deep
    # one line per finding: file, kind, what, and the split file's line for the id
    split = os.path.join(d, "ImageSets", "Main", "labeled.txt")
    text = {f.kind: str(f) for f in report.findings}
    assert text["duplicate_id"].startswith(f"{split}:11: duplicate_id: id ")
    assert "also on line" in text["duplicate_id"]
    assert re.search(r"\.xml: size_mismatch: <size> says \d+x\d+ .* is \d+x\d+ \(id '\w+', "
                     + re.escape(split) + r":\d+\)$", text["size_mismatch"])
    assert "FF D9" in text["truncated_image"] and "HTML" in text["not_an_image"]
    assert all(f.fix for f in report.findings)
    # another split of the same directory is untouched; an empty split is one finding
    assert check_voc(d, "test", classes()).findings == []
    faults.write_split(d, "empty", ["", "  "])
    (empty,) = check_voc(d, "empty", classes()).findings
    assert (empty.kind, empty.path) == ("empty_split", os.path.join(d, "ImageSets", "Main",
                                                                    "empty.txt"))
    missing = check_voc(d, "val", classes()).findings
    assert [f.kind for f in missing] == ["missing_split"] and "labeled" in missing[0].message


def test_sharded_check_merges_to_the_whole(clean_voc, tmp_path):
    d = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    plant_faults(d)
    whole = check_voc(d, "labeled", classes())
    shards = [check_voc(d, "labeled", classes(), shard=(r, 3)) for r in range(3)]
    assert sum(s.num_checked for s in shards) == whole.num_images == 11
    merged = merge_reports(shards)
    assert merged.findings == whole.findings and merged.num_objects == whole.num_objects
    # processes instead of this one: the same findings
    assert check_voc(d, "labeled", classes(), workers=2).findings == whole.findings


def test_inspect_image_known_answers(clean_voc, tmp_path):
    from PIL import Image

    from detectron2.data.detection_utils import read_image

    good = faults.jpg(clean_voc, faults.split_ids(clean_voc, "test")[0])
    data = open(good, "rb").read()
    width, height = Image.open(good).size
    assert inspect_image(good) == ((width, height), None)
    assert inspect_image(good, deep=True) == ((width, height), None)

    def write(name, content):
        p = str(tmp_path / name)
        with open(p, "wb") as f:
            f.write(content)
        return p

    # bytes after a complete image (padding, or data some cameras append): not truncated
    assert inspect_image(write("padded.jpg", data + b"\0" * 300))[1] is None
    assert inspect_image(write("appended.jpg", data + os.urandom(2000)))[1] is None
    kind = inspect_image(write("cut.jpg", data[:len(data) * 2 // 3]))[1][0]
    assert kind == "truncated_image"
    assert inspect_image(write("cut_tail.jpg", data[:-2]))[1][0] == "truncated_image"
    assert inspect_image(write("empty.jpg", b""))[1][0] == "empty_image"
    assert inspect_image(write("page.jpg", b"<html>oops</html>"))[1][0] == "not_an_image"
    assert inspect_image(str(tmp_path / "absent.jpg")) == (None, ("missing_image",
                                                                  "does not exist"))
    os.mkdir(tmp_path / "dir.jpg")
    assert inspect_image(str(tmp_path / "dir.jpg"))[1][0] == "unreadable_image"
    png = str(tmp_path / "png.jpg")  # a PNG under a .jpg name: Detectron2 reads it, so fine
    Image.new("RGB", (20, 10)).save(png, format="PNG")
    assert inspect_image(png, deep=True) == ((20, 10), None)
    # EXIF orientation 6 (rotated 90 degrees): the size Detectron2's read_image returns
    rotated = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), "white").save(rotated, exif=exif)
    shape = read_image(rotated, format="BGR").shape
    assert inspect_image(rotated)[0] == (shape[1], shape[0]) == (30, 40)
    broken = faults.break_huffman(write("huffman.jpg", data))
    assert inspect_image(broken) == ((width, height), None)  # header and FF D9 are fine
    kind, message = inspect_image(broken, deep=True)[1]
    assert kind == "corrupt_image" and "OSError" in message
    with pytest.raises(OSError):  # what the data loader will meet
        read_image(broken)


def test_cut_jpeg_is_truncated_even_when_pillow_loads_truncated_images(clean_voc, tmp_path,
                                                                       monkeypatch):
    """With ImageFile.LOAD_TRUNCATED_IMAGES on (set by many training scripts), Pillow decodes
    a cut JPEG without an error, padding the missing rows: only the missing end-of-image
    marker tells, and the check must still report it."""
    from PIL import Image, ImageFile

    data = open(faults.jpg(clean_voc, faults.split_ids(clean_voc, "test")[0]), "rb").read()
    cut = str(tmp_path / "cut.jpg")
    with open(cut, "wb") as f:
        f.write(data[:len(data) * 2 // 3])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # restored after the test
    Image.open(cut).load()  # decodes silently: the situation the check must not miss
    size, (kind, message) = inspect_image(cut)
    assert kind == "truncated_image" and "FF D9" in message and size == Image.open(cut).size
    assert inspect_image(cut, deep=True)[1][0] == "truncated_image"


def test_dicts_of_other_datasets_are_checked(clean_voc, tmp_path):
    ids = faults.split_ids(clean_voc, "test")
    good = faults.jpg(clean_voc, ids[0])
    from PIL import Image

    w, h = Image.open(good).size
    bad = str(tmp_path / "cut.jpg")
    with open(bad, "wb") as f:
        f.write(open(good, "rb").read()[:500])
    dicts = [
        {"file_name": good, "image_id": 1, "height": h, "width": w,
         "annotations": [{"bbox": [1, 1, 10, 10], "bbox_mode": 0, "category_id": 0},
                         {"bbox": [5, 5, 0, 3], "bbox_mode": 1, "category_id": 1},
                         {"bbox": [0, 0, w + 20, 5], "bbox_mode": 0, "category_id": 7}]},
        {"file_name": bad, "image_id": 2, "height": h, "width": w, "annotations": []},
        {"file_name": good, "image_id": 1, "height": h + 1, "width": w, "annotations": []},
    ]
    report = check_dataset_dicts(dicts, "mine", num_classes=4)
    assert {(f.kind, f.line) for f in report.findings} == {
        ("degenerate_box", 1), ("unknown_class", 1), ("box_outside_image", 1),
        ("truncated_image", 2), ("duplicate_id", 3), ("size_mismatch", 3)}
    assert check_dataset_dicts([], "none").findings[0].kind == "empty_split"


def _tool():
    spec = importlib.util.spec_from_file_location("check_dataset_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_dataset_tool(clean_voc, tmp_path, capsys):
    from imagescore_det.data import register_voc

    tool = _tool()
    assert tool.main([clean_voc, "--split", "labeled", "--split", "test", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "split labeled: 10 images" in out and "0 problem(s)" in out
    d = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    expected, expected_deep = plant_faults(d)
    json_path = str(tmp_path / "findings.json")
    assert tool.main([d, "--split", "labeled", "--deep", "--json", json_path]) == 1
    out = capsys.readouterr().out
    for kind, path, line in expected_deep:  # every finding, with its file
        assert f"{path}" in out and kind in out
    assert "How to fix:" in out and "full decode" in out
    dumped = json.load(open(json_path))["datasets"][0]
    assert {(f["kind"], f["path"], f["line"]) for f in dumped["findings"]} == expected_deep
    # a registered name, and a name that is neither
    name = unique("tool")
    register_voc(name, d, "labeled", 2007, classes())
    assert tool.main([name, "--limit", "3"]) == 1
    out = capsys.readouterr().out
    assert f"{name}: 11 images" in out and "... and 9 more" in out
    assert tool.main(["no_such_dataset_name"]) == 2
    assert "neither a directory nor a registered dataset" in capsys.readouterr().err


def _exit_status(tool, argv):
    """The status ``python tools/check_dataset.py ARGV`` exits with (``sys.exit(main())``;
    a ``SystemExit`` with a message exits 1, as Python does)."""
    try:
        return tool.main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def test_check_dataset_exit_status_tells_findings_from_targets_it_cannot_check(
        clean_voc, tmp_path, capsys):
    """Issue 19.7: 0 clean, 1 findings, 2 a name or path it cannot check (the help's promise;
    it used to exit 1 for those too, the status of findings)."""
    from imagescore_det.data import register_voc

    tool = _tool()
    assert _exit_status(tool, [clean_voc, "--split", "labeled", "--workers", "1"]) == 0
    broken = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    faults.zero_bytes(faults.jpg(broken, faults.split_ids(broken, "labeled")[0]))
    assert _exit_status(tool, [broken, "--split", "labeled", "--workers", "1"]) == 1
    name = unique("exit")
    register_voc(name, broken, "labeled", 2007, classes())
    assert _exit_status(tool, [name, "--workers", "1"]) == 1
    capsys.readouterr()
    not_voc = tmp_path / "not_voc"
    (not_voc / "images").mkdir(parents=True)
    no_splits = faults.copy_voc(clean_voc, tmp_path / "no_splits" / "VOC2007")
    shutil.rmtree(os.path.join(no_splits, "ImageSets"))
    for argv, message in ((["no_such_dataset_name"], "neither a directory nor a registered"),
                          ([str(not_voc)], "is not a Pascal VOC directory"),
                          ([no_splits], "has no split files"),
                          ([clean_voc, name, "no_such_dataset_name"], "neither a directory")):
        assert _exit_status(tool, argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, argv
    # and as a script exits
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, TOOL, "no_such_dataset_name"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "neither a directory nor a registered" in p.stderr


def test_tool_with_a_config_shows_what_training_would_do(clean_voc, tmp_path, capsys):
    from imagescore_det.data import register_voc

    d = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    pool_ids = faults.split_ids(d, "unlabeled")
    faults.zero_bytes(faults.jpg(d, pool_ids[0]))
    names = {s: unique(s) for s in ("labeled", "unlabeled", "test")}
    for split, name in names.items():
        register_voc(name, d, split, 2007, classes())
    opts = ["DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST",
            f"('{names['test']}',)", "IMAGE_SCORE.ENABLED", "True",
            "IMAGE_SCORE.UNLABELED_DATASETS", f"('{names['unlabeled']}',)"]
    assert _tool().main(["--config-file", TINY_CONFIG, "--opts", *opts]) == 1
    out = capsys.readouterr().out
    assert f"{names['unlabeled']} (unlabeled: IMAGE_SCORE.UNLABELED_DATASETS)" in out
    assert "at trainer start: {'skip': 1}" in out and "training would stop on 0" in out


# --------------------------------------------------------------------------- trainer start
def _register_copy(clean_voc, tmp_path, corrupt):
    from imagescore_det.data import register_voc

    d = faults.copy_voc(clean_voc, tmp_path / "VOC2007")
    corrupt(d)
    names = {s: unique(s) for s in ("labeled", "unlabeled", "test")}
    for split, name in names.items():
        register_voc(name, d, split, 2007, classes())
    return d, names


def _cfg(tmp_path, names, *opts):
    from imagescore_det.engine import load_config

    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path / "out") + [
        "DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST", f"('{names['test']}',)",
        "IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
        f"('{names['unlabeled']}',)", "IMAGE_SCORE.START_ITER", "1", "IMAGE_SCORE.GRID",
        "(4, 4)", "IMAGE_SCORE.EVAL_BEFORE", "False", *opts])
    cfg.freeze()
    return cfg


def test_bad_labeled_or_test_data_stops_before_the_first_iteration(clean_voc, tmp_path):
    from imagescore_det.engine import Trainer

    labeled_jpg = {}

    def corrupt(d):
        ids = faults.split_ids(d, "labeled")
        labeled_jpg["cut"] = faults.truncate(faults.jpg(d, ids[2]))
        labeled_jpg["xml"] = faults.set_first_class(
            faults.xml(d, _with_objects(d, ids)[-1]), "hexagon")
        faults.zero_bytes(faults.jpg(d, faults.split_ids(d, "test")[1]))

    d, names = _register_copy(clean_voc, tmp_path, corrupt)
    with pytest.raises(DataCheckError) as e:
        Trainer(_cfg(tmp_path, names))  # before the data loader or the model is built
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert f"labeled dataset '{names['labeled']}' (DATASETS.TRAIN): 2 problem(s)" in msg
    assert f"test dataset '{names['test']}' (DATASETS.TEST): 1 problem(s)" in msg
    split = os.path.join(d, "ImageSets", "Main", "labeled.txt")
    assert f"{labeled_jpg['cut']}: truncated_image" in msg and f"{split}:3)" in msg
    assert f"{labeled_jpg['xml']}: unknown_class" in msg
    assert "How to fix:" in msg and "applies to the unlabeled pool only" in msg
    assert f"python tools/check_dataset.py {names['labeled']} {names['test']}" in msg


def test_pool_policy_error_stops_before_the_first_iteration(clean_voc, tmp_path):
    from imagescore_det.engine import ConfigError, Trainer

    bad = {}

    def corrupt(d):
        bad["jpg"] = faults.html_page(faults.jpg(d, faults.split_ids(d, "unlabeled")[3]))

    _, names = _register_copy(clean_voc, tmp_path, corrupt)
    trainer = Trainer(_cfg(tmp_path, names, "IMAGE_SCORE.ON_BAD_IMAGE", "error"))
    trainer.resume_or_load(resume=False)
    with pytest.raises(DataCheckError) as e:
        trainer.train()
    assert trainer.iter == 0
    msg = str(e.value)
    assert f"{bad['jpg']}: not_an_image" in msg and "IMAGE_SCORE.ON_BAD_IMAGE is 'error'" in msg
    assert "set IMAGE_SCORE.ON_BAD_IMAGE skip" in msg
    with pytest.raises(ConfigError, match="ON_BAD_IMAGE is 'ignore'"):
        _cfg(tmp_path, names, "IMAGE_SCORE.ON_BAD_IMAGE", "ignore")


# --------------------------------------------------------------------------- during a round
@pytest.fixture(scope="module")
def round_setup(clean_voc, tmp_path_factory):
    """A pool of 6 images whose image 2 decodes badly (a good header and end marker: the start
    check cannot see it), 4 labeled images and a tiny untrained detector."""
    from detectron2.data import DatasetCatalog

    from imagescore_det.data import register_voc
    from imagescore_det.engine import Trainer, load_config

    tmp = tmp_path_factory.mktemp("round")
    d = faults.copy_voc(clean_voc, tmp / "VOC2007")
    pool_ids = faults.split_ids(d, "unlabeled")[:6]
    faults.write_split(d, "pool6", pool_ids)
    faults.write_split(d, "labeled4", faults.split_ids(d, "labeled")[:4])
    broken = faults.break_huffman(faults.jpg(d, pool_ids[2]))
    names = {s: unique(s) for s in ("labeled", "unlabeled")}
    for split, name in (("labeled4", names["labeled"]), ("pool6", names["unlabeled"])):
        register_voc(name, d, split, 2007, classes())
    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp / "out") + [
        "DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST", "()",
        "IMAGE_SCORE.GRID", "(4, 4)",
        "IMAGE_SCORE.UNLABELED_DATASETS", f"('{names['unlabeled']}',)",
        "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    return {"cfg": cfg, "model": model, "pool": DatasetCatalog.get(names["unlabeled"]),
            "labeled": lambda: DatasetCatalog.get(names["labeled"]), "broken": broken,
            "dirname": d}


def _round(setup, *opts, skipped=None):
    from imagescore_det.engine.round import compute_round

    cfg = setup["cfg"].clone()
    cfg.merge_from_list(list(opts))
    return compute_round(cfg, setup["model"], setup["pool"], 1, 1, setup["labeled"],
                         seed=3, skipped=skipped)


@pytest.mark.parametrize("selector,phase", [("image_score", "score"), ("softmax", "score"),
                                            ("random", "pseudo-label")])
def test_a_bad_image_in_the_round_is_skipped(round_setup, selector, phase):
    result = _round(round_setup, "IMAGE_SCORE.SELECTOR", selector,
                    "IMAGE_SCORE.TOP_FRACTION", "1.0")
    (record,) = result.skipped
    assert record["file_name"] == round_setup["broken"] and record["phase"] == phase
    assert record["reason"].startswith("OSError: ") and "broken data stream" in record["reason"]
    assert record["image_id"] == round_setup["pool"][2]["image_id"]
    names = [d["file_name"] for d in result.pool]
    examined = {result.pool[i]["file_name"] for i in result.examined}
    assert round_setup["broken"] not in examined
    if phase == "score":  # left out of the ranking
        assert len(result.pool) == 5 and round_setup["broken"] not in names
    else:  # ranked (random needs no pixels), then failed while pseudo-labeling
        assert len(result.pool) == 6 and len(result.examined) == 5
    pseudo_files = {d["file_name"] for d in result.pseudo}
    assert round_setup["broken"] not in pseudo_files


def test_known_bad_images_are_left_out_and_counted(round_setup, tmp_path):
    from imagescore_det.engine import round_files
    from imagescore_det.engine.round import summarize

    result = _round(round_setup, "IMAGE_SCORE.SELECTOR", "random", "IMAGE_SCORE.TOP_FRACTION",
                    "1.0", skipped={0: "empty_image: is empty (0 bytes)"})
    assert [(r["file_name"], r["phase"]) for r in result.skipped] == [
        (round_setup["pool"][0]["file_name"], "data check"),
        (round_setup["broken"], "pseudo-label")]
    assert result.skipped[0]["reason"] == "empty_image: is empty (0 bytes)"
    manifest = summarize(result, round_setup["cfg"], classes(), "fp")
    assert manifest.num_skipped == len(result.skipped) == 2 and manifest.pool_size == 5
    directory = str(tmp_path / "round_1")
    round_files.write_round(directory, result, manifest, plots=False)
    rows = round_files.read_skipped_csv(os.path.join(directory, round_files.SKIPPED_CSV))
    assert rows == [{k: str(v) for k, v in r.items()} for r in result.skipped]
    back = round_files.read_manifest(directory)
    assert back.num_skipped == manifest.num_skipped
    old = dict(back.to_dict())
    old.pop("num_skipped")  # a manifest written before the key existed
    assert round_files.RoundManifest.from_dict(old).num_skipped == 0


def test_policy_error_names_the_file_in_the_round(round_setup):
    from imagescore_det.engine.bad_images import BadImageError

    for selector in ("image_score", "softmax"):
        with pytest.raises(BadImageError) as e:
            _round(round_setup, "IMAGE_SCORE.SELECTOR", selector,
                   "IMAGE_SCORE.ON_BAD_IMAGE", "error")
        msg = str(e.value)
        assert f"{round_setup['broken']}: OSError" in msg and "unlabeled pool" in msg
        assert "Set IMAGE_SCORE.ON_BAD_IMAGE skip" in msg and "check_dataset.py --deep" in msg


def test_non_finite_activations_are_skipped_in_the_pool_and_stop_on_labeled(round_setup):
    from imagescore_det.engine.bad_images import NON_FINITE, BadImageError

    backbone = round_setup["model"].backbone
    layer = dict(backbone.named_modules())["conv3_1"]
    calls = {"n": 0, "poison": None}

    def poison(module, inputs, output):  # BATCH_SIZE 1: one call per image, labeled first
        calls["n"] += 1
        if calls["n"] == calls["poison"]:
            return output * float("nan")
        return None

    handle = layer.register_forward_hook(poison)
    try:
        n_labeled = len(round_setup["labeled"]())
        # pool images 0, 1, 3, 4 are the 1st to 4th pool forwards (image 2 does not decode)
        calls.update(n=0, poison=n_labeled + 4)
        result = _round(round_setup, "IMAGE_SCORE.SELECTOR", "image_score")
        reasons = {r["file_name"]: r["reason"] for r in result.skipped}
        assert reasons[round_setup["pool"][4]["file_name"]] == NON_FINITE
        assert len(reasons) == 2 and len(result.pool) == 4
        calls.update(n=0, poison=3)  # a labeled image: never skipped
        with pytest.raises(BadImageError) as e:
            _round(round_setup, "IMAGE_SCORE.SELECTOR", "image_score")
        labeled = round_setup["labeled"]()
        assert f"{labeled[2]['file_name']}: {NON_FINITE}" in str(e.value)
        assert "labeled set" in str(e.value) and "never skipped" in str(e.value)
    finally:
        handle.remove()


# --------------------------------------------------------------------------- end to end
def _run_train_net(root, out, extra, num_gpus=1, timeout=600, script=TRAIN_NET):
    opts = tiny_cfg_opts(out, max_iter=3)
    opts[1], opts[3] = "('synthetic_voc_labeled',)", "('synthetic_voc_test',)"
    opts += ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
             "('synthetic_voc_unlabeled',)", "IMAGE_SCORE.START_ITER", "1",
             "IMAGE_SCORE.GRID", "(4, 4)", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "IMAGE_SCORE.EVAL_BEFORE", "False",
             "TEST.EVAL_PERIOD", "0", *extra]
    cmd = [sys.executable, script, "--config-file", TINY_CONFIG, "--num-gpus",
           str(num_gpus), *opts]
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("IMAGESCORE_VOC07REAL", None)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


_TWO_RUNS = """
import copy
import os
import sys

sys.path.insert(0, {tools!r})
import train_net  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from imagescore_det.data import SYNTHETIC_CLASSES, register_voc  # noqa: E402
from imagescore_det.engine.bad_images import BadImageError  # noqa: E402

register_voc("decode_only_pool", {dirname!r}, "decode_only", 2007, SYNTHETIC_CLASSES)


def main(args):
    # 1. ON_BAD_IMAGE error on a pool whose one bad image only fails when decoded in the
    #    round: each rank writes what it raised
    first = copy.deepcopy(args)
    first.opts = args.opts + ["IMAGE_SCORE.ON_BAD_IMAGE", "error", "OUTPUT_DIR",
                              os.path.join({out!r}, "error"), "IMAGE_SCORE.UNLABELED_DATASETS",
                              "('decode_only_pool',)"]
    try:
        train_net.main(first)
    except BadImageError as e:
        with open(os.path.join({out!r}, f"rank{{comm.get_rank()}}.error"), "w") as f:
            f.write(str(e))
    comm.synchronize()
    # 2. ON_BAD_IMAGE skip (the default) on the pool with 4 bad images
    second = copy.deepcopy(args)
    second.opts = args.opts + ["OUTPUT_DIR", os.path.join({out!r}, "skip")]
    return train_net.main(second)


if __name__ == "__main__":
    args = train_net.default_argument_parser().parse_args()
    train_net.launch(main, args.num_gpus, dist_url="auto", args=(args,))
"""


def test_train_net_on_two_ranks_skips_alike_and_stops_alike(clean_voc, tmp_path):
    """tools/train_net.py's main under two gloo processes, twice in one launch (to keep the
    test short): the data check at start is sharded; the undecodable image is met by rank 1
    only, yet

    1. with ON_BAD_IMAGE error both ranks raise the same BadImageError (none is left
       waiting in a collective);
    2. with skip both ranks skip the same 4 images (3 found at start: truncated, zero
       bytes, not an image; 1 while scoring) and select the same images; skipped.csv,
       the manifest, report.json and the run summary count them."""
    root = tmp_path / "d2root"
    d = faults.copy_voc(clean_voc, root / "synthetic_voc" / "VOC2007")
    ids = faults.split_ids(d, "unlabeled")
    # index 9 of 16, and 7 of the 13 left after the data check: rank 1's shard either way
    broken = faults.break_huffman(faults.jpg(d, ids[9]))
    bad = {
        faults.truncate(faults.jpg(d, ids[1])): ("data check", "truncated_image"),
        faults.zero_bytes(faults.jpg(d, ids[6])): ("data check", "empty_image"),
        faults.html_page(faults.jpg(d, ids[12])): ("data check", "not_an_image"),
        broken: ("score", "OSError"),
    }
    faults.write_split(d, "decode_only", [i for i in ids if i not in (ids[1], ids[6], ids[12])])
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "two_runs.py"
    script.write_text(_TWO_RUNS.format(tools=os.path.join(REPO, "tools"), out=str(out),
                                       dirname=d))
    proc = _run_train_net(root, out, [], num_gpus=2, script=str(script))
    assert proc.returncode == 0, proc.stderr[-4000:]

    errors = [(out / f"rank{r}.error").read_text() for r in (0, 1)]
    assert errors[0] == errors[1]
    assert errors[0].startswith("1 image(s) of the unlabeled pool could not be used:\n"
                                f"  {broken}: OSError: broken data stream")
    assert "(rank 1)" in errors[0] and "Set IMAGE_SCORE.ON_BAD_IMAGE skip" in errors[0]
    assert not (out / "error" / "image_score" / "round_1" / "selection.json").exists()

    skip = out / "skip"
    round_dir = skip / "image_score" / "round_1"
    with open(round_dir / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["file_name"]: (r["phase"], r["reason"].split(":")[0]) for r in rows} == bad
    assert [r for r in rows if r["phase"] == "score"][0]["reason"].endswith("(rank 1)")
    manifest = json.load(open(round_dir / "selection.json"))
    assert manifest["num_skipped"] == 4 and manifest["pool_size"] == 12
    with open(round_dir / "scores.csv", newline="") as f:
        scored = {r["file_name"] for r in csv.DictReader(f)}
    assert len(scored) == 12 and not scored & set(bad)
    assert json.load(open(skip / "report.json"))["rounds"][0]["num_skipped"] == 4
    log = (skip / "log.txt").read_text()
    assert "3 unlabeled pool image(s) cannot be read and will be skipped" in log
    assert "4 unusable pool images skipped (skipped.csv)" in log  # the run summary
    digests = {}
    for name, rank in (("log.txt", 0), ("log.txt.rank1", 1)):
        text = (skip / name).read_text()
        digests[rank] = re.findall(rf"Rank {rank} selection digest (\w+)", text)
        assert "Round 1 skipped 4 pool image(s)" in text, name
    assert len(digests[0]) == 1 and digests[0] == digests[1]


def test_every_pool_image_skipped_is_an_error_and_roles_are_strictest():
    from imagescore_det.engine.bad_images import BadImageError, drop_skipped
    from imagescore_det.engine.data_checks import classify, config_datasets
    from imagescore_det.engine.selectors import Ranking
    from imagescore_det.data.checks import Finding

    pool = [{"image_id": "a", "file_name": "/x/a.jpg"}, {"image_id": "b", "file_name": "/x/b.jpg"}]
    records = []
    kept, ranking = drop_skipped(pool, Ranking(np.array([0.5, 0.2])), {0: "empty_image: 0 bytes"},
                                 records, "data check")
    assert kept == pool[1:] and ranking.scores.tolist() == [0.2]
    assert records == [{"image_id": "a", "file_name": "/x/a.jpg", "phase": "data check",
                        "reason": "empty_image: 0 bytes"}]
    with pytest.raises(BadImageError, match="Every one of the 2 images .* /x/a.jpg: r0"):
        drop_skipped(pool, None, {0: "r0", 1: "r1"}, [], "score")

    class Cfg:  # the keys config_datasets reads
        class DATASETS:
            TRAIN, TEST = ("lab",), ("test",)

        class IMAGE_SCORE:
            ENABLED, SELECTOR, LABELED_DATASETS = True, "image_score", ()
            UNLABELED_DATASETS = ("pool", "lab")

    assert config_datasets(Cfg) == [("lab", "labeled", "DATASETS.TRAIN, "
                                     "IMAGE_SCORE.UNLABELED_DATASETS"),
                                    ("pool", "unlabeled", "IMAGE_SCORE.UNLABELED_DATASETS"),
                                    ("test", "test", "DATASETS.TEST")]
    image, box, xml = (Finding("empty_image", "a", ""), Finding("degenerate_box", "a", ""),
                       Finding("bad_annotation", "a", ""))
    assert [classify(f, "unlabeled", "skip") for f in (image, box, xml)] == [
        "skip", "warning", "error"]
    assert [classify(f, "unlabeled", "error") for f in (image, box, xml)] == [
        "error", "warning", "error"]
    assert {classify(f, role, "skip") for f in (image, box, xml) for role in ("labeled", "test")} \
        == {"error"}


def test_a_dataset_in_several_roles_gets_the_strictest_whatever_key_names_it():
    """Brute force over every combination of the four keys naming one dataset "d": its role
    is "labeled" when DATASETS.TRAIN or IMAGE_SCORE.LABELED_DATASETS names it, else "test"
    when DATASETS.TEST does, else "unlabeled" (the pool's lenient role); its keys are listed
    in that order. In particular a pool dataset that is also a test set is checked as test
    data, so a bad image in it stops the run instead of being skipped."""
    import itertools

    from imagescore_det.data.checks import Finding
    from imagescore_det.engine.data_checks import classify, config_datasets

    keys = ("DATASETS.TRAIN", "IMAGE_SCORE.LABELED_DATASETS", "IMAGE_SCORE.UNLABELED_DATASETS",
            "DATASETS.TEST")
    for n in range(1, 5):
        for named in itertools.combinations(keys, n):
            def names(key):
                return ("d",) if key in named else ()

            class Cfg:
                class DATASETS:
                    TRAIN, TEST = names("DATASETS.TRAIN"), names("DATASETS.TEST")

                class IMAGE_SCORE:
                    ENABLED, SELECTOR = True, "image_score"
                    LABELED_DATASETS = names("IMAGE_SCORE.LABELED_DATASETS")
                    UNLABELED_DATASETS = names("IMAGE_SCORE.UNLABELED_DATASETS")

            role = ("labeled" if {"DATASETS.TRAIN", "IMAGE_SCORE.LABELED_DATASETS"} & set(named)
                    else "test" if "DATASETS.TEST" in named else "unlabeled")
            listed = [k for k in ("DATASETS.TRAIN", "IMAGE_SCORE.LABELED_DATASETS",
                                  "IMAGE_SCORE.UNLABELED_DATASETS", "DATASETS.TEST")
                      if k in named]
            assert config_datasets(Cfg) == [("d", role, ", ".join(listed))], named
            bad = classify(Finding("empty_image", "d", ""), role, "skip")
            assert bad == ("skip" if role == "unlabeled" else "error"), named
