"""Tests of imagescore_det.data: the synthetic VOC generator and the validated VOC loader."""
import importlib.util
import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectron2.data import DatasetCatalog, MetadataCatalog

import imagescore_det.data as D
from imagescore_det.data.synthetic import META_FILENAME, render_synthetic_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_labeled=6, num_unlabeled=8, num_test=4)


def unique(prefix):
    """DatasetCatalog is global: every test registers its own names."""
    return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


def read_split(d, split):
    with open(os.path.join(d, "ImageSets", "Main", split + ".txt")) as f:
        return f.read().split()


def xml_objects(path):
    root = ET.parse(path).getroot()
    out = []
    for o in root.findall("object"):
        b = o.find("bndbox")
        out.append((o.find("name").text,
                    tuple(int(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return root, out


def redraw(seed, idx, shifted, params):
    """Re-render image ``idx`` the way the generator does (rng seeded by [seed, idx])."""
    rng = np.random.default_rng([seed, idx])
    w = int(rng.integers(params["min_size"], params["max_size"] + 1))
    h = int(rng.integers(params["min_size"], params["max_size"] + 1))
    return render_synthetic_image(rng, w, h, shifted=shifted,
                                  min_obj_size=params["min_obj_size"],
                                  max_obj_size=params["max_obj_size"],
                                  max_objects=params["max_objects"])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "synthetic_voc"
    meta = D.generate_synthetic_voc(root, seed=0, **SMALL)
    return root, meta


def copy_dataset(small, tmp_path):
    root, meta = small
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return str(dst / "VOC2007")


# ------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------
def test_layout_and_meta(small):
    root, meta = small
    d = meta["dirname"]
    assert d == os.path.join(str(root), "VOC2007") and meta["generated"]
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        assert os.path.isdir(os.path.join(d, sub))
    with open(os.path.join(d, META_FILENAME)) as f:
        on_disk = json.load(f)
    assert on_disk == {k: v for k, v in meta.items() if k not in ("dirname", "generated")}
    assert on_disk["classes"] == list(D.SYNTHETIC_CLASSES) and len(D.SYNTHETIC_CLASSES) == 4
    assert on_disk["seed"] == 0 and on_disk["params"]["seed"] == 0
    assert on_disk["params"]["num_labeled"] == 6 and on_disk["params"]["shifted_fraction"] == 0.4
    assert on_disk["splits"] == {"labeled": 6, "unlabeled": 8, "test": 4, "trainval": 14}
    assert set(on_disk["domains"]) == set(read_split(d, "trainval") + read_split(d, "test"))
    assert sum(on_disk["num_objects"].values()) > 0


def test_determinism_same_seed(small, tmp_path):
    root, meta = small
    other = D.generate_synthetic_voc(tmp_path / "again", seed=0, **SMALL)
    a, b = meta["dirname"], other["dirname"]
    files = sorted(os.path.relpath(os.path.join(dp, f), a)
                   for dp, _, fs in os.walk(a) for f in fs)
    assert files == sorted(os.path.relpath(os.path.join(dp, f), b)
                           for dp, _, fs in os.walk(b) for f in fs)
    for rel in files:
        with open(os.path.join(a, rel), "rb") as fa, open(os.path.join(b, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel
        if rel.endswith(".jpg"):
            assert np.array_equal(cv2.imread(os.path.join(a, rel)),
                                  cv2.imread(os.path.join(b, rel)))


def test_different_seed_differs(small, tmp_path):
    _, meta = small
    other = D.generate_synthetic_voc(tmp_path / "s1", seed=1, **SMALL)
    a, b = meta["dirname"], other["dirname"]
    ids = read_split(a, "trainval") + read_split(a, "test")
    n_xml_diff = sum(open(f"{a}/Annotations/{i}.xml").read() != open(f"{b}/Annotations/{i}.xml").read()
                     for i in ids)
    n_px_diff = 0
    for i in ids:
        x, y = cv2.imread(f"{a}/JPEGImages/{i}.jpg"), cv2.imread(f"{b}/JPEGImages/{i}.jpg")
        n_px_diff += x.shape != y.shape or not np.array_equal(x, y)
    assert n_xml_diff == len(ids) and n_px_diff == len(ids)
    assert other["seed"] == 1 and other["domains"] != meta["domains"]


def test_xml_valid_boxes_inside_and_one_based(small):
    _, meta = small
    d, params = meta["dirname"], meta["params"]
    for idx, image_id in enumerate(sorted(meta["domains"])):
        jpg = cv2.imread(f"{d}/JPEGImages/{image_id}.jpg")
        assert jpg is not None and jpg.ndim == 3
        root, objs = xml_objects(f"{d}/Annotations/{image_id}.xml")
        assert root.tag == "annotation" and root.find("filename").text == image_id + ".jpg"
        w, h = int(root.find("size/width").text), int(root.find("size/height").text)
        assert (h, w, 3) == jpg.shape and root.find("size/depth").text == "3"
        assert params["min_size"] <= w <= params["max_size"]
        assert params["min_size"] <= h <= params["max_size"]
        assert 1 <= len(objs) <= params["max_objects"]
        for o in root.findall("object"):
            assert o.find("pose").text and o.find("truncated").text == "0"
            assert o.find("difficult").text == "0"
        for name, (x0, y0, x1, y1) in objs:
            assert name in D.SYNTHETIC_CLASSES
            # 1-based inclusive: 1 <= min <= max <= size
            assert 1 <= x0 < x1 <= w and 1 <= y0 < y1 <= h
            assert params["min_obj_size"] - 3 <= max(x1 - x0 + 1, y1 - y0 + 1)
            assert max(x1 - x0 + 1, y1 - y0 + 1) <= params["max_obj_size"] + 3
        # boxes are exactly the drawn shapes' 0-based pixel bounds, plus 1
        img, drawn = redraw(meta["seed"], idx, meta["domains"][image_id] == "shifted", params)
        assert objs == [(c, (b[0] + 1, b[1] + 1, b[2] + 1, b[3] + 1)) for c, b in drawn]
        # same picture up to JPEG loss (which mostly drops the pixel noise: compare blurred)
        blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (7, 7), 2)  # noqa: E731
        assert np.abs(blur(img) - blur(jpg)).mean() < 4


def test_split_files_disjoint_and_complete(small):
    _, meta = small
    d = meta["dirname"]
    lab, unl, test = (read_split(d, s) for s in ("labeled", "unlabeled", "test"))
    assert (len(lab), len(unl), len(test)) == (6, 8, 4)
    assert not (set(lab) & set(unl) or set(lab) & set(test) or set(unl) & set(test))
    assert read_split(d, "trainval") == lab + unl
    every = set(lab) | set(unl) | set(test)
    assert {f[:-4] for f in os.listdir(f"{d}/JPEGImages")} == every
    assert {f[:-4] for f in os.listdir(f"{d}/Annotations")} == every
    assert len(every) == 18


@pytest.mark.parametrize("fraction,n_unl", [(0.4, 10), (0.0, 5), (1.0, 5), (0.25, 7)])
def test_domain_mix(tmp_path, fraction, n_unl):
    meta = D.generate_synthetic_voc(tmp_path / "m", seed=3, num_labeled=3,
                                    num_unlabeled=n_unl, num_test=2, shifted_fraction=fraction)
    d, dom = meta["dirname"], meta["domains"]
    unl = read_split(d, "unlabeled")
    n_shift = sum(dom[i] == "shifted" for i in unl)
    assert n_shift == round(fraction * n_unl) == meta["num_shifted_unlabeled"]
    assert all(dom[i] == "typical" for i in read_split(d, "labeled") + read_split(d, "test"))
    assert set(dom.values()) <= {"typical", "shifted"}


def test_shifted_domain_is_visibly_different(tmp_path):
    meta = D.generate_synthetic_voc(tmp_path / "v", seed=5, num_labeled=0, num_unlabeled=16,
                                    num_test=0, shifted_fraction=0.5)
    d = meta["dirname"]
    stats = {"typical": [], "shifted": []}
    for i, dom in meta["domains"].items():
        g = cv2.imread(f"{d}/JPEGImages/{i}.jpg", cv2.IMREAD_GRAYSCALE).astype(np.float32)
        hsv = cv2.cvtColor(cv2.imread(f"{d}/JPEGImages/{i}.jpg"), cv2.COLOR_BGR2HSV)
        noise = np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean()
        stats[dom].append((noise, hsv[..., 1].mean()))
    typ, shf = np.array(stats["typical"]), np.array(stats["shifted"])
    assert shf[:, 0].mean() > 2 * typ[:, 0].mean()  # much noisier
    assert shf[:, 1].mean() < typ[:, 1].mean()  # less saturated


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), w=st.integers(64, 200), h=st.integers(64, 200),
       shifted=st.booleans())
def test_render_boxes_always_inside(seed, w, h, shifted):
    img, objs = render_synthetic_image(np.random.default_rng(seed), w, h, shifted=shifted,
                                       min_obj_size=18, max_obj_size=60)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert 1 <= len(objs) <= 4
    for cls, (x0, y0, x1, y1) in objs:
        assert cls in D.SYNTHETIC_CLASSES
        assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1


def test_idempotent_regeneration(small):
    root, meta = small
    d = meta["dirname"]
    xml = f"{d}/Annotations/000000.xml"
    before = os.stat(xml).st_mtime_ns
    again = D.generate_synthetic_voc(root, seed=0, **SMALL)
    assert again["generated"] is False
    assert {k: v for k, v in again.items() if k != "generated"} == \
        {k: v for k, v in meta.items() if k != "generated"}
    assert os.stat(xml).st_mtime_ns == before
    # no temporary directory left behind next to the root
    assert os.listdir(os.path.dirname(str(root))) == [os.path.basename(str(root))]


def test_parameter_mismatch_error(small):
    root, _ = small
    with pytest.raises(FileExistsError) as e:
        D.generate_synthetic_voc(root, seed=1, **SMALL)
    msg = str(e.value)
    assert str(root) in msg and "seed" in msg and "Delete" in msg
    with pytest.raises(FileExistsError, match="num_test"):
        D.generate_synthetic_voc(root, seed=0, num_labeled=6, num_unlabeled=8, num_test=5)


def test_existing_foreign_directory_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "something.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        D.generate_synthetic_voc(tmp_path / "r", **SMALL)
    # an empty directory is fine
    (tmp_path / "e").mkdir()
    assert D.generate_synthetic_voc(tmp_path / "e", **SMALL)["generated"]


def test_bad_parameters():
    with pytest.raises(ValueError, match="shifted_fraction"):
        D.generate_synthetic_voc("/nonexistent/x", shifted_fraction=1.5)
    with pytest.raises(ValueError, match="min_size"):
        D.generate_synthetic_voc("/nonexistent/x", min_size=200, max_size=100)
    assert not os.path.exists("/nonexistent/x")


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "prepare_synthetic_voc", os.path.join(REPO, "datasets", "prepare_synthetic_voc.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = ["--root", str(tmp_path / "c"), "--seed", "2", "--num-labeled", "2",
            "--num-unlabeled", "3", "--num-test", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "Wrote 6 images" in out and "unlabeled.txt: 3 ids" in out
    assert cli.main(args) == 0 and "nothing written" in capsys.readouterr().out
    assert cli.main(args[:3] + ["3"] + args[4:]) == 2
    assert "different parameters" in capsys.readouterr().err


def test_cli_headroom_generates_the_protocols_datasets_beside_root(tmp_path, capsys,
                                                                   monkeypatch):
    """--headroom generates imagescore_det.data.HEADROOM_DATASETS in --root's parent (where
    the configs read them: $DETECTRON2_DATASETS/synthetic_headroom*); without it, not."""
    import imagescore_det.data as data

    spec = importlib.util.spec_from_file_location(
        "prepare_synthetic_voc", os.path.join(REPO, "datasets", "prepare_synthetic_voc.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    seen = []
    monkeypatch.setattr(data, "generate_headroom_datasets", lambda root: seen.append(root) or {
        name: os.path.join(root, name, "VOC2007") for name in data.HEADROOM_DATASETS})
    args = ["--root", str(tmp_path / "c"), "--num-labeled", "2", "--num-unlabeled", "3",
            "--num-test", "1"]
    assert cli.main(args) == 0 and seen == []
    assert cli.main(args + ["--headroom"]) == 0
    assert seen == [str(tmp_path)]
    out = capsys.readouterr().out
    assert "synthetic_headroom_shifted: " in out and "460 pool, 40% shifted" in out


# ------------------------------------------------------------------------------------------
# registration and loading
# ------------------------------------------------------------------------------------------
def test_load_through_dataset_catalog(small):
    _, meta = small
    d, params = meta["dirname"], meta["params"]
    name = unique("load")
    D.register_voc(name, d, "unlabeled", 2007, D.SYNTHETIC_CLASSES)
    md = MetadataCatalog.get(name)
    assert md.thing_classes == list(D.SYNTHETIC_CLASSES)
    assert (md.dirname, md.year, md.split) == (d, 2007, "unlabeled")
    assert D.dataset_root_of(name) == d
    ids = read_split(d, "unlabeled")
    assert D.voc_image_ids(name) == ids
    assert D.dataset_domains(name) == {i: meta["domains"][i] for i in ids}
    dicts = DatasetCatalog.get(name)
    assert [r["image_id"] for r in dicts] == ids
    all_ids = sorted(meta["domains"])
    for r in dicts:
        assert r["file_name"] == os.path.join(d, "JPEGImages", r["image_id"] + ".jpg")
        img = cv2.imread(r["file_name"])
        assert (r["height"], r["width"]) == img.shape[:2]
        _, drawn = redraw(meta["seed"], all_ids.index(r["image_id"]),
                          meta["domains"][r["image_id"]] == "shifted", params)
        got = [(a["category_id"], a["bbox"]) for a in r["annotations"]]
        want = [(D.SYNTHETIC_CLASSES.index(c), [float(b[0]), float(b[1]),
                                                float(b[2] + 1), float(b[3] + 1)])
                for c, b in drawn]
        assert got == want
        assert all(int(a["bbox_mode"]) == 0 for a in r["annotations"])  # XYXY_ABS


def test_single_image_split_loads(small, tmp_path):
    d = copy_dataset(small, tmp_path)
    with open(os.path.join(d, "ImageSets", "Main", "one.txt"), "w") as f:
        f.write("000003\n")
    name = unique("one")
    D.register_voc(name, d, "one", 2007, D.SYNTHETIC_CLASSES)
    (r,) = DatasetCatalog.get(name)
    full = unique("full")
    D.register_voc(full, d, "labeled", 2007, D.SYNTHETIC_CLASSES)
    same = {x["image_id"]: x for x in DatasetCatalog.get(full)}["000003"]
    assert r == same  # identical to what load_voc_instances gives for that image


def test_registration_idempotent(small):
    _, meta = small
    d = meta["dirname"]
    name = unique("idem")
    D.register_voc(name, d, "labeled", 2007, D.SYNTHETIC_CLASSES)
    D.register_voc(name, d, "labeled", 2007, list(D.SYNTHETIC_CLASSES))  # no-op
    with pytest.raises(ValueError, match="already registered"):
        D.register_voc(name, d, "test", 2007, D.SYNTHETIC_CLASSES)
    D.register_voc(name, d, "test", 2007, D.SYNTHETIC_CLASSES, replace=True)
    assert MetadataCatalog.get(name).split == "test"
    assert len(DatasetCatalog.get(name)) == 4
    other = unique("foreign")
    DatasetCatalog.register(other, lambda: [])
    with pytest.raises(ValueError, match="other code"):
        D.register_voc(other, d, "test", 2007, D.SYNTHETIC_CLASSES)


def test_registration_is_lazy(tmp_path):
    name = unique("lazy")
    D.register_voc(name, str(tmp_path / "nowhere" / "VOC2007"), "labeled", 2007,
                   D.SYNTHETIC_CLASSES)  # no error until loaded
    assert name in DatasetCatalog.list()


def test_builtin_names_registered():
    for split in ("labeled", "unlabeled", "test", "trainval"):
        md = MetadataCatalog.get(f"synthetic_voc_{split}")
        assert md.thing_classes == list(D.SYNTHETIC_CLASSES) and md.split == split
        assert md.year == 2007 and md.dirname.endswith(os.path.join("synthetic_voc", "VOC2007"))
        assert md.evaluator_type == "pascal_voc"
    for split in ("labeled", "unlabeled", "test"):
        md = MetadataCatalog.get(f"voc07real_{split}")
        assert len(md.thing_classes) == 20 and md.split == split and md.year == 2007
    for dataset in D.HEADROOM_DATASETS:  # the headroom protocol's, in their own directories
        md = MetadataCatalog.get(f"{dataset}_labeled")
        assert md.dirname.endswith(os.path.join(os.sep + dataset, "VOC2007"))
        assert md.thing_classes == list(D.SYNTHETIC_CLASSES) and md.split == "labeled"
    # same root again: no-op; another root: error
    D.register_all_imagescore_datasets()
    with pytest.raises(ValueError, match="already registered"):
        D.register_all_imagescore_datasets(root="/some/other/root")


def test_error_missing_root(tmp_path):
    missing = str(tmp_path / "absent" / "VOC2007")
    name = unique("missing")
    D.register_voc(name, missing, "labeled", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert missing in msg and "prepare_synthetic_voc.py" in msg and "DETECTRON2_DATASETS" in msg
    name = unique("hint")
    D.register_voc(name, missing, "labeled", 2007, D.SYNTHETIC_CLASSES,
                   missing_hint="Set IMAGESCORE_VOC07REAL.")
    with pytest.raises(FileNotFoundError, match="IMAGESCORE_VOC07REAL"):
        DatasetCatalog.get(name)


def test_error_points_at_nested_voc2007(small):
    root, _ = small
    name = unique("nested")
    D.register_voc(name, str(root), "labeled", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(name)
    assert "Annotations" in str(e.value) and os.path.join(str(root), "VOC2007") in str(e.value)


def test_error_missing_split(small):
    _, meta = small
    name = unique("split")
    D.register_voc(name, meta["dirname"], "val", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert os.path.join(meta["dirname"], "ImageSets", "Main", "val.txt") in msg
    assert "labeled, test, trainval, unlabeled" in msg


def test_error_unknown_class_in_xml(small, tmp_path):
    d = copy_dataset(small, tmp_path)
    xml = os.path.join(d, "Annotations", "000002.xml")
    text = open(xml).read()
    first = ET.parse(xml).getroot().find("object/name").text
    with open(xml, "w") as f:
        f.write(text.replace(f"<name>{first}</name>", "<name>hexagon</name>", 1))
    name = unique("unknown")
    D.register_voc(name, d, "labeled", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert xml in msg and "'hexagon'" in msg
    assert all(c in msg for c in D.SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="hexagon"):
        D.check_class_names(d, "labeled", D.SYNTHETIC_CLASSES)
    assert D.check_class_names(d, "test", D.SYNTHETIC_CLASSES)  # other splits are fine


def test_error_wrong_class_list(small):
    _, meta = small
    d = meta["dirname"]
    name = unique("wrong")
    D.register_voc(name, d, "test", 2007, D.VOC_CLASS_NAMES)
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    first = read_split(d, "test")[0]
    assert os.path.join(d, "Annotations", first + ".xml") in msg
    assert f"class_names={list(D.SYNTHETIC_CLASSES)}" in msg  # the right list is suggested
    counts = D.check_class_names(d, "test", D.SYNTHETIC_CLASSES)
    assert set(counts) == set(D.SYNTHETIC_CLASSES) and sum(counts.values()) > 0
    with pytest.raises(ValueError, match="SYNTHETIC_CLASSES|synthetic_meta"):
        D.check_class_names(d, "test", ("disc", "square"))


def test_error_missing_or_broken_xml(small, tmp_path):
    d = copy_dataset(small, tmp_path)
    os.remove(os.path.join(d, "Annotations", "000001.xml"))
    name = unique("noxml")
    D.register_voc(name, d, "labeled", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(FileNotFoundError, match=r"000001\.xml"):
        DatasetCatalog.get(name)
    broken = os.path.join(d, "Annotations", "000007.xml")  # an unlabeled-pool image
    with open(broken, "w") as f:
        f.write("<annotation><size>")
    name = unique("badxml")
    D.register_voc(name, d, "unlabeled", 2007, D.SYNTHETIC_CLASSES)
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get(name)
    assert broken in str(e.value) and "not valid XML" in str(e.value)


# ------------------------------------------------------------------------------------------
# the real voc2007-real data (only where the project's machines hold it)
# ------------------------------------------------------------------------------------------
def _real_dir():
    for base in ("/work/shared", os.path.join(REPO, "..", "shared")):
        d = os.path.join(base, "voc2007-real", "VOC2007")
        if os.path.isdir(os.path.join(d, "Annotations")):
            return os.path.abspath(d)
    return None


@pytest.mark.skipif(_real_dir() is None, reason="voc2007-real is not present on this machine")
def test_real_voc2007_labeled():
    d = _real_dir()
    name = unique("real")
    D.register_voc(name, d, "labeled", 2007, D.VOC_CLASS_NAMES)
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 1000
    assert len(MetadataCatalog.get(name).thing_classes) == 20
    cats = {a["category_id"] for r in dicts for a in r["annotations"]}
    assert cats == set(range(20))
    r = dicts[0]
    assert os.path.isfile(r["file_name"])
    assert (r["height"], r["width"]) == cv2.imread(r["file_name"]).shape[:2]
    for r in dicts:
        for a in r["annotations"]:
            x0, y0, x1, y1 = a["bbox"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
    ids = {s: set(read_split(d, s)) for s in ("labeled", "unlabeled", "test")}
    assert not (ids["labeled"] & ids["unlabeled"] or ids["labeled"] & ids["test"]
                or ids["unlabeled"] & ids["test"])
