"""Your own data (issue 18): COCO json / image-folder / VOC datasets from DATASETS.REGISTER."""
import json
import os
import shutil

import pytest

from conftest import REPO, load_tool, tiny_cfg_opts

CUSTOM_CONFIG = os.path.join(REPO, "configs", "custom", "imagescore_V16tiny_custom.yaml")


def entries(coco, pool="folder"):
    out = [("my_labeled", "coco", coco["labeled"], coco["images"]),
           ("my_test", "coco", coco["test"], coco["images"])]
    if pool == "folder":
        out.append(("my_photos", "folder", coco["unlabeled"]))
    return out


def load(*opts):
    from imagescore_det.engine import load_config

    return load_config(os.path.join(REPO, "configs", "synthetic", "Base-V16tiny-synthetic.yaml"),
                       list(opts))


def register_opts(items, train="my_labeled", test="my_test"):
    return ["DATASETS.REGISTER", repr([list(e) for e in items]),
            "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)"]


def test_coco_and_folder_datasets_from_the_config(tiny_coco, tiny_voc):
    """Known answers: the COCO dicts equal the VOC split they were written from (boxes in
    XYXY_ABS, classes in order), the folder lists the pool's images recursively."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from imagescore_det.data import SYNTHETIC_CLASSES, load_voc_dicts

    load(*register_opts(entries(tiny_coco)))
    meta = MetadataCatalog.get("my_labeled")
    assert meta.evaluator_type == "coco" and meta.json_file == tiny_coco["labeled"]
    assert list(meta.thing_classes) == list(SYNTHETIC_CLASSES)
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
    voc = load_voc_dicts(os.path.join(tiny_coco["root"], "voc", "VOC2007"), "labeled",
                         SYNTHETIC_CLASSES)
    coco = DatasetCatalog.get("my_labeled")
    assert len(coco) == len(voc) == 10
    for c, v in zip(coco, voc):
        assert os.path.basename(c["file_name"]) == os.path.basename(v["file_name"])
        assert (c["width"], c["height"]) == (v["width"], v["height"])
        assert [(a["category_id"], a["bbox"], int(a["bbox_mode"])) for a in c["annotations"]] == \
            [(a["category_id"], [float(x) for x in a["bbox"]], int(a["bbox_mode"]))
             for a in v["annotations"]]
    photos = DatasetCatalog.get("my_photos")
    assert [d["image_id"] for d in photos] == sorted(d["image_id"] for d in photos)
    assert len(photos) == 12 and {d["image_id"][:2] for d in photos} == {"a/", "b/"}
    assert all("annotations" not in d and d["width"] > 0 for d in photos)
    assert list(MetadataCatalog.get("my_photos").thing_classes) == list(SYNTHETIC_CLASSES)
    # loading the same config again is a no-op (the trainer and tools load it again)
    load(*register_opts(entries(tiny_coco)))


def _error(*opts):
    from imagescore_det.engine import ConfigError

    with pytest.raises(ConfigError) as info:
        load(*opts)
    return str(info.value)


def test_a_json_that_is_not_coco(tiny_coco, tmp_path):
    bad = tmp_path / "export.json"
    bad.write_text(json.dumps([{"image": "a.jpg", "label": "disc"}]))
    message = _error(*register_opts([("x_lab", "coco", str(bad), tiny_coco["images"]),
                                     ("my_test", "coco", tiny_coco["test"], tiny_coco["images"])],
                                    train="x_lab"))
    assert str(bad) in message and "not COCO" in message and "export it again" in message
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    message = _error(*register_opts([("x_lab", "coco", str(bad), tiny_coco["images"])],
                                    train="x_lab", test="x_lab"))
    assert "no categories list" in message and str(bad) in message


def test_a_folder_with_no_images(tiny_coco, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("x")
    items = entries(tiny_coco, pool=None) + [("x_photos", "folder", str(tmp_path / "photos"))]
    message = _error(*register_opts(items))
    assert str(tmp_path / "photos") in message and "holds no images" in message


def test_a_dataset_name_defined_twice(tiny_coco):
    items = entries(tiny_coco) + [("my_labeled", "coco", tiny_coco["test"], tiny_coco["images"])]
    message = _error(*register_opts(items))
    assert "'my_labeled' is defined twice" in message and "#1 and #4" in message
    message = _error(*register_opts([("synthetic_voc_test", "coco", tiny_coco["test"],
                                      tiny_coco["images"])], train="synthetic_voc_test",
                                    test="synthetic_voc_test"))
    assert "already registered" in message and "pick another name" in message


def test_class_lists_must_agree(tiny_coco, tmp_path):
    data = json.load(open(tiny_coco["test"]))
    data["categories"][2]["name"] = "star"
    other = tmp_path / "test_star.json"
    other.write_text(json.dumps(data))
    items = [("my_labeled", "coco", tiny_coco["labeled"], tiny_coco["images"]),
             ("star_test", "coco", str(other), tiny_coco["images"])]
    message = _error(*register_opts(items, test="star_test"))
    assert "'my_labeled' alone has ['triangle'], 'star_test' alone has ['star']" in message


def test_a_folder_is_not_labeled_data(tiny_coco):
    message = _error(*register_opts(entries(tiny_coco), train="my_photos"))
    assert "'my_photos' is a folder of images without annotations" in message


def _planted_detections(gt, seed=0):
    """Detections around the ground truth: shifted true boxes, false positives, a wrong
    class, tied scores, and one image with more than 100 detections (COCO's cap)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(int(rng.integers(0, 3))):
            dx, dy = rng.normal(0, 0.15 * w), rng.normal(0, 0.15 * h)
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(cats))
            out.append({"image_id": a["image_id"], "category_id": cat,
                        "bbox": [x + dx, y + dy, w * rng.uniform(0.8, 1.2), h],
                        "score": float(rng.choice([0.9, 0.5, round(rng.random(), 3)]))})
    first_cat = gt["annotations"][0]["category_id"]
    for im in gt["images"]:
        crowded = im["id"] == gt["annotations"][0]["image_id"]  # 130 misses, then its truth
        for _ in range(130 if crowded else 3):
            cat = first_cat if crowded else int(rng.choice(cats))  # the cap is per class
            out.append({"image_id": im["id"], "category_id": cat,
                        "bbox": [float(rng.uniform(50, 60)), float(rng.uniform(50, 60)),
                                 float(rng.uniform(5, 10)), float(rng.uniform(5, 10))],
                        "score": 0.95 if crowded else float(rng.choice([0.3, rng.random()]))})
        if crowded:
            out += [{"image_id": im["id"], "category_id": a["category_id"], "bbox": a["bbox"],
                     "score": 0.1} for a in gt["annotations"] if a["image_id"] == im["id"]]
    return out


def _cocoeval(gt_path, detections):
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    precision = ev.eval["precision"]
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            per_class[gt.cats[cat]["name"]] = {"AP": 100 * np.mean(p[p > -1]),
                                               "AP50": 100 * np.mean(p[0]),
                                               "AP75": 100 * np.mean(p[5])}
    return {"AP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AP75": 100 * ev.stats[2],
            "per_class": per_class}


def test_coco_ap_from_the_detections_file_equals_cocoeval(tiny_coco, tmp_path):
    """AP recomputed from the detections file = pycocotools' COCOeval, with a crowd box,
    an image without objects and one with more than 100 detections planted."""
    from imagescore_det.evaluation.bootstrap import load_evaluation
    from imagescore_det.evaluation.coco_ap import coco_ap, detections_record

    gt = json.load(open(tiny_coco["test"]))
    crowd = dict(gt["annotations"][0], id=10_000, iscrowd=1)
    crowd["bbox"] = [0.0, 0.0, 30.0, 30.0]
    crowd["area"] = 900.0
    gt["annotations"].append(crowd)
    gt["images"].append(dict(gt["images"][0], id=99, file_name="empty.jpg"))
    gt_path = tmp_path / "test.json"
    gt_path.write_text(json.dumps(gt))
    for seed in range(3):
        detections = _planted_detections(gt, seed) + [  # two inside the crowd box: ignored
            {"image_id": crowd["image_id"], "category_id": crowd["category_id"], "bbox": box,
             "score": 0.99} for box in ([2.0, 2.0, 20.0, 20.0], [0.0, 0.0, 30.0, 30.0])]
        record = detections_record("t", gt, detections)
        path = tmp_path / f"detections_{seed}.json"
        path.write_text(json.dumps(record))
        ours, reference = coco_ap(load_evaluation(str(path))), _cocoeval(str(gt_path), detections)
        assert reference["AP50"] > 1.0  # a test that can tell
        for key in ("AP", "AP50", "AP75"):
            assert ours[key] == pytest.approx(reference[key], rel=1e-12, abs=1e-12), key
        assert set(ours["per_class"]) == set(reference["per_class"])
        for name, aps in reference["per_class"].items():
            for key, value in aps.items():
                assert ours["per_class"][name][key] == pytest.approx(value, abs=1e-10), (name, key)


def test_compare_runs_on_coco_detections_files(tiny_coco, tmp_path, capsys):
    """tools/compare_runs.py on two COCO detections files: the full-set numbers are COCOeval's,
    a resample drawing every image once gives the full-set AP, a run against itself p = 0.5."""
    import numpy as np
    from imagescore_det.evaluation.bootstrap import load_evaluation
    from imagescore_det.evaluation.coco_ap import PreparedCocoRun, detections_record

    gt = json.load(open(tiny_coco["test"]))
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"run{seed}" / "inference" / "detections_t.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(detections_record("t", gt, _planted_detections(gt, seed))))
        paths.append(str(path))
    run = PreparedCocoRun(load_evaluation(paths[0]))
    ones = np.ones((1, len(gt["images"])))
    np.testing.assert_allclose(run.resampled_ap(ones)[0], run.full_set_ap(), rtol=0, atol=1e-12)
    result = load_tool("compare_runs").main([str(tmp_path / "run1"), str(tmp_path / "run2"),
                                             "--resamples", "50"])
    reference = [_cocoeval(tiny_coco["test"], _planted_detections(gt, s)) for s in (1, 2)]
    assert result["AP50"]["a"] == pytest.approx(reference[0]["AP50"], abs=1e-10)
    assert result["AP"]["b"] == pytest.approx(reference[1]["AP"], abs=1e-10)
    assert "COCO" in result["test_set"]["metric"] and "COCO" in capsys.readouterr().out
    same = load_tool("compare_runs").main([paths[0], paths[0], "--resamples", "20"])
    assert same["AP50"]["p_value"] == 0.5 and same["AP"]["difference"] == 0.0
    other = json.loads(open(paths[1]).read())
    other["ground_truth"][str(other["image_ids"][0])] = []
    open(paths[1], "w").write(json.dumps(other))
    with pytest.raises(SystemExit, match="different test sets"):
        load_tool("compare_runs").main(paths)


def test_walkthrough_trains_selects_and_evaluates_on_coco_and_a_folder(tiny_coco, tmp_path,
                                                                      monkeypatch):
    """configs/custom at toy size: the labeled COCO json trains, the Image Score selects from
    the folder (no truth: no precision), the COCO json test set is evaluated by COCOEvaluator,
    and the detections file gives COCOeval's AP again."""
    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine import Trainer, load_config
    from imagescore_det.evaluation.bootstrap import load_evaluation
    from imagescore_det.evaluation.coco_ap import coco_ap

    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_coco["parent"])
    opts = tiny_cfg_opts(tmp_path / "out", max_iter=6)
    at = opts.index("DATASETS.TRAIN")
    del opts[at:at + 4]  # the config's own datasets
    seed_all_rng(7)  # the model's initialisation, whatever ran before
    cfg = load_config(CUSTOM_CONFIG, opts + ["IMAGE_SCORE.START_ITER", "3",
                                             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                             "IMAGE_SCORE.PAIRED_BASELINE", "True",
                                             "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "0",
                                             "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False"])
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    report = json.load(open(tmp_path / "out" / "report.json"))
    assert report["config"]["metric"] == "COCO"
    paired = report["paired_baseline"]  # the supervised-only copy, compared image by image
    assert paired["summary"]["metric"] == "COCO" and "AP50_difference" in paired["summary"]
    assert paired["comparisons"]["synthetic_coco_test"]["test_set"]["metric"].startswith("COCO")
    assert set(report["eval_after"]["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                                "AP-disc", "AP50-cross"}
    (entry,) = report["rounds"]
    assert entry["pool_size"] == 12 and entry["num_selected"] == 4
    assert entry["num_pseudo_images"] == 4  # MIN_BOXES_PER_IMAGE 0: every selected image
    assert entry.get("pseudo_precision") is None
    scores = open(tmp_path / "out" / "image_score" / "round_1" / "scores.csv").read()
    assert "a/" in scores and "b/" in scores and "true_positives" not in scores
    inference = tmp_path / "out" / "inference"
    per_class = json.load(open(inference / "coco_per_class_synthetic_coco_test.json"))
    assert set(per_class["per_class"]) == {"disc", "square", "triangle", "cross"}
    ours = coco_ap(load_evaluation(str(inference / "detections_synthetic_coco_test.json")))
    bbox = report["eval_after"]["bbox"]
    for key in ("AP", "AP50", "AP75"):
        assert ours[key] == pytest.approx(bbox[key], abs=1e-9)
        assert per_class["mean"][key] == pytest.approx(bbox[key], abs=1e-12)
    for name, aps in per_class["per_class"].items():
        assert aps["AP"] == pytest.approx(bbox[f"AP-{name}"], abs=1e-9)
        assert ours["per_class"][name]["AP50"] == pytest.approx(aps["AP50"], abs=1e-9)


def _planted_coco(tiny_coco, tmp_path):
    """A copy of the labeled json and its images with one of each COCO defect planted."""
    images = tmp_path / "images"
    shutil.copytree(tiny_coco["images"], images)
    data = json.load(open(tiny_coco["labeled"]))
    ims, anns = data["images"], data["annotations"]
    os.remove(images / ims[0]["file_name"])                            # missing_image
    (images / ims[1]["file_name"]).write_bytes(b"<html>404</html>")   # not_an_image
    raw = (images / ims[2]["file_name"]).read_bytes()
    (images / ims[2]["file_name"]).write_bytes(raw[: len(raw) // 2])  # truncated_image
    first_of = {}
    for a in anns:
        first_of.setdefault(a["image_id"], a)
    first_of[ims[3]["id"]]["bbox"] = [5.0, 5.0, 0.0, 10.0]             # zero_size_box
    first_of[ims[4]["id"]]["bbox"] = [ims[4]["width"] - 5.0, 5.0, 30.0, 10.0]  # outside
    first_of[ims[5]["id"]]["category_id"] = 77                         # unknown_category
    first_of[ims[6]["id"]]["iscrowd"] = 1                              # crowd_objects (note)
    ims.append(dict(ims[7], file_name=ims[8]["file_name"]))            # duplicate_image_id
    anns.append(dict(anns[0], id=999, image_id=12345))                 # orphan_annotation
    path = tmp_path / "planted.json"
    path.write_text(json.dumps(data))
    return path, images, ims


def test_check_dataset_finds_each_planted_coco_defect(tiny_coco, tmp_path, capsys):
    path, images, ims = _planted_coco(tiny_coco, tmp_path)
    code = load_tool("check_dataset").main([str(path), "--image-root", str(images)])
    out = capsys.readouterr().out
    assert code == 1
    expected = {"missing_image": ims[0]["file_name"], "not_an_image": ims[1]["file_name"],
                "truncated_image": ims[2]["file_name"], "zero_size_box": f"(id {ims[3]['id']})",
                "box_outside_json_size": f"(id {ims[4]['id']})",
                "unknown_category": "category_id 77", "crowd_objects": "1 annotation(s)",
                "duplicate_image_id": f"has id {ims[7]['id']}",
                "orphan_annotation": "image_id 12345"}
    lines = out.splitlines()
    for kind, detail in expected.items():
        hits = [line for line in lines if f": {kind}: " in line]
        assert len(hits) == 1 and detail in hits[0], (kind, hits)
    assert "How to fix:" in out and "iscrowd 1 objects are not trained on" in out
    # the clean json: nothing found
    assert load_tool("check_dataset").main([tiny_coco["labeled"], "--image-root",
                                            tiny_coco["images"]]) == 0


def test_check_dataset_finds_each_planted_folder_defect(tiny_coco, tmp_path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(tiny_coco["unlabeled"], folder)
    names = sorted(os.listdir(folder / "a"))
    shutil.copyfile(folder / "a" / names[0], folder / "b" / "copy.jpg")       # duplicate_image
    raw = (folder / "a" / names[1]).read_bytes()
    (folder / "a" / names[1]).write_bytes(raw[: len(raw) // 3])              # truncated_image
    (folder / "a" / names[2]).write_text("not a photo")                      # not_an_image
    (folder / "a" / "notes.txt").write_text("shot on Monday")                # ignored_file (note)
    from PIL import Image

    png = folder / "b" / "cut.png"  # a PNG cut off: its header reads, it does not decode
    Image.open(folder / "a" / names[3]).save(png)
    png.write_bytes(png.read_bytes()[:-200])
    code = load_tool("check_dataset").main([str(folder), "--deep"])
    out = capsys.readouterr().out
    assert code == 1
    for kind, path in {"duplicate_image": folder / "b" / "copy.jpg",
                       "truncated_image": folder / "a" / names[1],
                       "not_an_image": folder / "a" / names[2],
                       "ignored_file": folder / "a" / "notes.txt",
                       "corrupt_image": png}.items():
        hits = [line for line in out.splitlines() if f": {kind}: " in line]
        assert len(hits) == 1 and str(path) in hits[0], (kind, out)
    # only the note: exit 0
    clean = tmp_path / "clean"
    shutil.copytree(tiny_coco["unlabeled"], clean)
    (clean / "README.txt").write_text("x")
    assert load_tool("check_dataset").main([str(clean)]) == 0


def test_trainer_start_checks_coco_and_folder_datasets(tiny_coco, tmp_path):
    """At trainer start: a labeled json's defects stop the run (its crowd note does not); a
    folder pool's bad images are skipped or stop it, per IMAGE_SCORE.ON_BAD_IMAGE."""
    from imagescore_det.data.checks import DataCheckError
    from imagescore_det.engine.data_checks import check_before_training

    path, images, ims = _planted_coco(tiny_coco, tmp_path)
    cfg = load(*register_opts([("bad_labeled", "coco", str(path), str(images)),
                               ("my_test", "coco", tiny_coco["test"], tiny_coco["images"])],
                              train="bad_labeled"))
    with pytest.raises(DataCheckError) as info:
        check_before_training(cfg, ("labeled", "test"))
    message = str(info.value)
    for kind in ("missing_image", "zero_size_box", "unknown_category", "duplicate_image_id"):
        assert f": {kind}: " in message
    assert "crowd_objects" not in message.split("How to fix:")[0]
    # only a crowd object: no stop
    data = json.load(open(tiny_coco["labeled"]))
    data["annotations"][0]["iscrowd"] = 1
    crowd = tmp_path / "crowd.json"
    crowd.write_text(json.dumps(data))
    cfg = load(*register_opts([("crowd_labeled", "coco", str(crowd), tiny_coco["images"]),
                               ("my_test", "coco", tiny_coco["test"], tiny_coco["images"])],
                              train="crowd_labeled"))
    assert [f.kind for f in check_before_training(cfg, ("labeled",)).warnings] == ["crowd_objects"]

    folder = tmp_path / "photos"
    shutil.copytree(tiny_coco["unlabeled"], folder)
    bad = folder / "a" / sorted(os.listdir(folder / "a"))[0]
    bad.write_text("<html>")
    items = entries(tiny_coco, pool=None) + [("bad_photos", "folder", str(folder))]
    opts = register_opts(items) + ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.START_ITER", "1",
                                   "IMAGE_SCORE.UNLABELED_DATASETS", "('bad_photos',)"]
    start = check_before_training(load(*opts), ("unlabeled",))
    assert list(start.pool_skips) == [os.path.normpath(str(bad))]
    with pytest.raises(DataCheckError, match="not_an_image"):
        check_before_training(load(*opts, "IMAGE_SCORE.ON_BAD_IMAGE", "error"), ("unlabeled",))


def test_export_pseudo_labels_to_coco_and_back(tiny_coco, tmp_path, monkeypatch):
    """A round's pseudo-labels as COCO json: read by pycocotools with the labeled set's
    categories and the scores, usable again as a labeled coco dataset; a missing round is
    an error naming the rounds that exist."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from pycocotools.coco import COCO

    from imagescore_det.engine import Trainer, load_config
    from imagescore_det.engine.round_files import read_round, round_dir

    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_coco["parent"])
    # the labeled json with other category ids (10, 20, 30, 40): the export must keep them
    data = json.load(open(tiny_coco["labeled"]))
    for c in data["categories"]:
        c["id"] *= 10
    for a in data["annotations"]:
        a["category_id"] *= 10
    labeled = tmp_path / "labeled_ids.json"
    labeled.write_text(json.dumps(data))
    opts = tiny_cfg_opts(tmp_path / "out", max_iter=4)
    at = opts.index("DATASETS.TRAIN")
    del opts[at:at + 4]
    items = [("ids_labeled", "coco", str(labeled), tiny_coco["images"]),
             ("my_test", "coco", tiny_coco["test"], tiny_coco["images"]),
             ("my_photos", "folder", tiny_coco["unlabeled"])]
    cfg = load_config(CUSTOM_CONFIG, opts + [
        "DATASETS.REGISTER", repr([list(e) for e in items]), "DATASETS.TRAIN", "('ids_labeled',)",
        "DATASETS.TEST", "('my_test',)", "IMAGE_SCORE.UNLABELED_DATASETS", "('my_photos',)",
        "IMAGE_SCORE.START_ITER", "2", "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "0",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
        "IMAGE_SCORE.EVAL_BEFORE", "False", "TEST.EVAL_PERIOD", "0"])
    cfg.freeze()
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text(cfg.dump())  # as tools/train_net.py's default_setup
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    tool = load_tool("export_pseudo_labels")
    path = tool.main([str(out)])
    assert path == os.path.join(round_dir(str(out), 1), "pseudo_labels_coco.json")
    pseudo = read_round(round_dir(str(out), 1)).pseudo
    coco = COCO(path)
    assert [c["id"] for c in coco.dataset["categories"]] == [10, 20, 30, 40]
    assert len(coco.imgs) == len(pseudo) == 4
    boxes = sum(len(d["annotations"]) for d in pseudo)
    assert boxes > 0 and len(coco.anns) == boxes
    first = pseudo[0]["annotations"][0]
    ann = coco.imgToAnns[1][0]
    assert ann["score"] == pytest.approx(first["score"])
    assert ann["category_id"] == 10 * (first["category_id"] + 1)
    assert coco.imgs[1]["file_name"] == os.path.relpath(pseudo[0]["file_name"],
                                                        tiny_coco["unlabeled"])
    # back as labeled data
    load(*register_opts([("reviewed", "coco", path, tiny_coco["unlabeled"]),
                         ("my_test", "coco", tiny_coco["test"], tiny_coco["images"])],
                        train="reviewed"))
    back = DatasetCatalog.get("reviewed")
    assert list(MetadataCatalog.get("reviewed").thing_classes) == \
        list(MetadataCatalog.get("my_test").thing_classes)
    assert [d["file_name"] for d in back] == [d["file_name"] for d in pseudo]
    assert back[0]["annotations"][0]["category_id"] == first["category_id"]
    assert back[0]["annotations"][0]["bbox"] == pytest.approx(first["bbox"], abs=0.01)
    with pytest.raises(SystemExit, match=r"Round 3 does not exist.*Rounds of .*: \[1\]"):
        tool.main([str(out), "--round", "3"])


def test_summary_names_the_metric_and_a_pool_without_truth(caplog):
    import logging

    from imagescore_det.engine.trainer import _log_summary

    rounds = [{"round": 1, "iteration": 3, "selector": "random", "num_selected": 4,
               "pool_size": 12, "num_pseudo_boxes": 5}]
    report = {"config": {"metric": "COCO", "eval_pseudo_labels": True},
              "eval_before": {"bbox": {"AP50": 1.5}}, "eval_after": {"bbox": {"AP50": 2.5}},
              "rounds": rounds}
    with caplog.at_level(logging.INFO, logger="imagescore_det"):
        _log_summary(report)
        _log_summary(dict(report, config={"metric": "VOC", "eval_pseudo_labels": True},
                          rounds=[dict(rounds[0], pseudo_precision=0.5)]))
    first, second = [r.getMessage() for r in caplog.records][-2:]
    assert "COCO AP50 before pseudo-labels: 1.50" in first and "COCO AP50 at the end" in first
    assert "the unlabeled pool has no truth to measure them against" in first
    assert "VOC AP50 at the end" in second and "no truth" not in second


def test_a_coco_json_pool_has_truth_and_precision(tiny_coco):
    """A COCO json as the pool: its truth measures the pseudo-labels in the detector's XYXY
    coordinates. Known answer: predictions that are the json's boxes ([x, y, w, h] ->
    [x, y, x + w, y + h]) are all true positives, and find every object."""
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine.round import has_truth, quality_rows

    items = entries(tiny_coco, pool=None) + [("pool_json", "coco", tiny_coco["test"],
                                              tiny_coco["images"])]
    cfg = load(*register_opts(items))
    pool = DatasetCatalog.get("pool_json")
    assert has_truth(pool)
    raw = json.load(open(tiny_coco["test"]))
    by_image = {im["id"]: [] for im in raw["images"]}
    for a in raw["annotations"]:
        by_image[a["image_id"]].append(a)
    predictions = []
    for d in pool:
        anns = by_image[d["image_id"]]
        predictions.append({"boxes": [[x, y, x + w, y + h] for x, y, w, h in
                                      (a["bbox"] for a in anns)],
                            "scores": [0.9] * len(anns),
                            "classes": [a["category_id"] - 1 for a in anns]})
    rows = quality_rows(predictions, pool, cfg.IMAGE_SCORE)
    assert sum(r[2] for r in rows) == len(raw["annotations"]) > 0
    assert all(r[0] == r[2] and r[1] == 0 for r in rows)


def test_a_coco_dataset_from_the_config_splits_by_percent(tiny_coco):
    """DATASETS.REGISTER and IMAGE_SCORE.SPLIT combine in one config: the COCO json named in
    REGISTER is split by SPLIT (registered first, then split), into the seeded permutation's
    first round(10 * 60 / 100) = 6 images and the other 4, in the json's order, with the COCO
    metadata (classes, evaluator) on both parts."""
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from imagescore_det.data.split import split_names

    cfg = load(*register_opts(entries(tiny_coco)),
               "IMAGE_SCORE.SPLIT.DATASET", "my_labeled", "IMAGE_SCORE.SPLIT.PERCENT", "60.0",
               "IMAGE_SCORE.SPLIT.SEED", "0")
    labeled_name, pool_name = split_names("my_labeled", 60.0, 0, 0)
    assert cfg.IMAGE_SCORE.SPLIT.DATASET == "my_labeled"
    source = [d["image_id"] for d in DatasetCatalog.get("my_labeled")]
    chosen = set(np.random.default_rng(0).permutation(len(source))[:6].tolist())
    assert [d["image_id"] for d in DatasetCatalog.get(labeled_name)] == \
        [i for k, i in enumerate(source) if k in chosen]
    assert [d["image_id"] for d in DatasetCatalog.get(pool_name)] == \
        [i for k, i in enumerate(source) if k not in chosen]
    for name in (labeled_name, pool_name):
        assert list(MetadataCatalog.get(name).thing_classes) == \
            list(MetadataCatalog.get("my_labeled").thing_classes)
