"""Evidence tools: per-image detections, the fast VOC AP against Detectron2's voc_eval, the
paired bootstrap (tools/compare_runs.py) and the paired supervised-only baseline."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval
from detectron2.structures import Boxes, Instances

from conftest import REPO, TINY_CONFIG, tiny_cfg_opts

from imagescore_det.evaluation import PerClassVOCEvaluator
from imagescore_det.evaluation.bootstrap import (
    IOU_THRESHOLDS,
    PreparedRun,
    TestSetMismatchError,
    compare,
    compare_files,
    format_markdown,
)
from imagescore_det.evaluation.detections import (
    DetectionsFileError,
    detections_path,
    find_detections,
    load_detections,
    write_detections,
)

COMPARE_RUNS = os.path.join(REPO, "tools", "compare_runs.py")


# --------------------------------------------------------------------------- helpers
def _noisy_predictions(dataset, seed, jitter=6.0, extra=3, score_decimals=1):
    """Per record: noisy copies of the truth boxes plus random boxes; scores rounded to
    ``score_decimals`` so that many tie (voc_eval's tie order must be reproduced)."""
    rng = np.random.default_rng(seed)
    out = {}
    for rec in dataset:
        preds = []
        for a in rec["annotations"]:
            box = np.array(a["bbox"], dtype=float) + rng.normal(0, jitter, 4)
            cls = a["category_id"] if rng.random() > 0.15 else int(rng.integers(0, 4))
            preds.append((box.tolist(), round(float(rng.random()), score_decimals), cls))
            if rng.random() < 0.3:  # a duplicate: a false positive once the truth is taken
                preds.append(((box + rng.normal(0, 2, 4)).tolist(),
                              round(float(rng.random()), score_decimals), cls))
        for _ in range(extra):
            x, y = rng.uniform(0, rec["width"] - 20), rng.uniform(0, rec["height"] - 20)
            w, h = rng.uniform(8, 40, 2)
            preds.append(([x, y, x + w, y + h], round(float(rng.random()), score_decimals),
                          int(rng.integers(0, 4))))
        out[rec["image_id"]] = preds
    return out


def _evaluate(name, dataset, preds, output_dir):
    """PerClassVOCEvaluator on ``preds`` ({image_id: [(box, score, class)]})."""
    evaluator = PerClassVOCEvaluator(name, output_dir=str(output_dir))
    evaluator.reset()
    for rec in dataset:
        p = preds[rec["image_id"]]
        inst = Instances((rec["height"], rec["width"]))
        inst.pred_boxes = Boxes(torch.tensor([q[0] for q in p], dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([q[1] for q in p], dtype=torch.float32)
        inst.pred_classes = torch.tensor([q[2] for q in p], dtype=torch.int64)
        evaluator.process([{"image_id": rec["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def _ground_truth_run(evaluation_path, out_path):
    """A detections file whose detections are the ground truth itself (score 1)."""
    data = json.load(open(evaluation_path))
    for name in data["classes"]:
        ids, scores, boxes = [], [], []
        for image_id in data["image_ids"]:
            for obj in data["ground_truth"][image_id]:
                if obj[0] == name:
                    ids.append(image_id)
                    scores.append(1.0)
                    boxes.append([float(v) for v in obj[2:6]])
        data["detections"][name] = {"image_ids": ids, "scores": scores, "boxes": boxes}
    json.dump(data, open(out_path, "w"))
    return str(out_path)


@pytest.fixture(scope="module")
def test_split(tiny_voc):
    name = tiny_voc["names"]["test"]
    return name, DatasetCatalog.get(name)


@pytest.fixture(scope="module")
def two_runs(test_split, tmp_path_factory):
    """Two noisy "runs" evaluated on the tiny test split: their detections files and the
    evaluator's results."""
    name, dataset = test_split
    runs = {}
    for key, seed in (("a", 1), ("b", 2)):
        out = tmp_path_factory.mktemp(f"run_{key}") / "inference"
        results = _evaluate(name, dataset, _noisy_predictions(dataset, seed), out)
        runs[key] = {"path": detections_path(str(out), name), "results": results,
                     "dir": out.parent}
    return runs


# --------------------------------------------------------------------------- the fast AP
def test_detections_file_written_atomically_with_truth_and_detections(two_runs, test_split):
    name, dataset = test_split
    path = two_runs["a"]["path"]
    assert os.path.isfile(path)
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
    ev = load_detections(path)
    assert ev.dataset == name and ev.use_07_metric  # tiny_voc is registered as year 2007
    assert ev.image_ids == [str(r["image_id"]) for r in dataset]
    assert ev.classes == list(MetadataCatalog.get(name).thing_classes)
    total = sum(len(ev.detections[c]["scores"]) for c in ev.classes)
    assert total == sum(len(p) for p in _noisy_predictions(dataset, 1).values())
    assert find_detections(str(two_runs["a"]["dir"])) == path


def test_fast_ap_equals_the_evaluator_exactly(two_runs):
    """Every class, AP50, AP75 and AP (0.50:0.95), mean and per class: == , not approx."""
    for run in two_runs.values():
        ev = load_detections(run["path"])
        full = PreparedRun(ev).full_set_ap()
        bbox = run["results"]
        per_class = json.load(open(os.path.join(
            os.path.dirname(run["path"]), f"voc_per_class_{ev.dataset}.json")))["per_class"]
        for c, name in enumerate(ev.classes):
            assert full[c, 0] == bbox[f"AP50-{name}"] == per_class[name]["AP50"]
            assert full[c, 5] == per_class[name]["AP75"]
            assert float(np.mean(full[c])) == per_class[name]["AP"]
        result = compare(ev, ev, resamples=5)
        assert result["AP50"]["a"] == bbox["AP50"]
        assert result["AP"]["a"] == bbox["AP"]
        assert 0 < bbox["AP50"] < 100


def _handmade_voc(root):
    """Five images with difficult objects, objects of two classes in one image, an image
    without objects; returns (anno template, image set path, truth {image: [(cls, box, diff)]})."""
    os.makedirs(os.path.join(root, "Annotations"))
    os.makedirs(os.path.join(root, "ImageSets", "Main"))
    truth = {
        "img0": [("a", [10, 10, 50, 50], 0), ("a", [60, 60, 90, 95], 1), ("b", [5, 60, 40, 90], 0)],
        "img1": [("a", [20, 20, 45, 45], 0), ("a", [22, 24, 48, 47], 0)],
        "img2": [],
        "img3": [("b", [30, 30, 70, 70], 1), ("b", [0, 0, 25, 25], 0)],
        "img4": [("a", [40, 5, 80, 35], 0), ("b", [40, 50, 80, 90], 0)],
    }
    for image, objs in truth.items():
        body = "".join(
            f"<object><name>{c}</name><pose>x</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for c, b, d in objs)
        with open(os.path.join(root, "Annotations", f"{image}.xml"), "w") as f:
            f.write(f"<annotation>{body}</annotation>")
    image_set = os.path.join(root, "ImageSets", "Main", "test.txt")
    with open(image_set, "w") as f:
        f.write("\n".join(truth) + "\n")
    return os.path.join(root, "Annotations", "{}.xml"), image_set, truth


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_fast_ap_equals_voc_eval_with_difficult_objects_and_ties(tmp_path, use_07_metric):
    anno, image_set, truth = _handmade_voc(str(tmp_path / "voc"))
    parse_rec.cache_clear()
    rng = np.random.default_rng(0)
    classes = ["a", "b"]
    predictions = {0: [], 1: []}
    for image, objs in truth.items():
        for cls, box, _ in objs:
            for _ in range(int(rng.integers(1, 4))):  # duplicates, some off target
                b = np.array(box, dtype=float) + rng.normal(0, 4, 4)
                predictions[classes.index(cls)].append(
                    f"{image} {rng.integers(0, 5) / 4:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}")
        for _ in range(2):
            x, y = rng.uniform(0, 60, 2)
            predictions[int(rng.integers(0, 2))].append(
                f"{image} {rng.integers(0, 5) / 4:.3f} {x:.1f} {y:.1f} {x + 30:.1f} {y + 30:.1f}")
    det_template = str(tmp_path / "{}.txt")
    for c, name in enumerate(classes):
        with open(det_template.format(name), "w") as f:
            f.write("\n".join(predictions[c]))
    path = str(tmp_path / "detections_hand.json")
    write_detections(path, "hand", classes, image_set, anno, use_07_metric, predictions)
    full = PreparedRun(load_detections(path)).full_set_ap()
    for c, name in enumerate(classes):
        for t, thresh in enumerate(IOU_THRESHOLDS):
            _, _, ap = voc_eval(det_template, anno, image_set, name, ovthresh=thresh,
                                use_07_metric=use_07_metric)
            assert full[c, t] == ap * 100, (name, thresh)


def test_a_resample_is_the_test_set_with_copies(two_runs, tmp_path):
    """An image drawn k times weighs like k copies of it: voc_eval on a test set written
    with the copies gives the same AP (unique scores, so no tie order is involved)."""
    ev = load_detections(two_runs["b"]["path"])
    rng = np.random.default_rng(5)
    n = len(ev.image_ids)
    weights = np.bincount(rng.integers(0, n, n), minlength=n)
    assert weights.max() >= 2 and (weights == 0).any()
    # make every score unique (ties between copies are taken next to each other here, by
    # whichever order voc_eval's sort gives them there)
    for name in ev.classes:
        d = ev.detections[name]
        d["scores"] = [s + 1e-6 * k for k, s in enumerate(d["scores"])]
    fast = PreparedRun(ev).resampled_ap(weights[None, :].astype(float))[0]
    # the copies as a VOC test set of their own
    root = tmp_path / "copies"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    names, det_lines = [], {c: [] for c in ev.classes}
    for i, image_id in enumerate(ev.image_ids):
        for k in range(weights[i]):
            copy = f"{image_id}_c{k}"
            names.append(copy)
            objs = "".join(
                f"<object><name>{o[0]}</name><pose>x</pose><truncated>0</truncated>"
                f"<difficult>{o[1]}</difficult><bndbox><xmin>{o[2]}</xmin><ymin>{o[3]}</ymin>"
                f"<xmax>{o[4]}</xmax><ymax>{o[5]}</ymax></bndbox></object>"
                for o in ev.ground_truth[image_id])
            (root / "Annotations" / f"{copy}.xml").write_text(f"<annotation>{objs}</annotation>")
            for name in ev.classes:
                d = ev.detections[name]
                for j, owner in enumerate(d["image_ids"]):
                    if owner == image_id:
                        b = d["boxes"][j]
                        det_lines[name].append(f"{copy} {d['scores'][j]!r} {b[0]!r} {b[1]!r} "
                                               f"{b[2]!r} {b[3]!r}")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(names) + "\n")
    template = str(tmp_path / "copies_{}.txt")
    for name in ev.classes:
        with open(template.format(name), "w") as f:
            f.write("\n".join(det_lines[name]))
    parse_rec.cache_clear()
    present = [name for name in ev.classes
               if any(o[0] == name and not o[1] for i, image_id in enumerate(ev.image_ids)
                      if weights[i] for o in ev.ground_truth[image_id])]
    assert len(present) >= 2
    for c, name in enumerate(ev.classes):
        # a class without truth in the resample: voc_eval's 0/0 recall, 0 with this metric
        for t in (0, 5):
            with np.errstate(invalid="ignore", divide="ignore"):
                _, _, ap = voc_eval(template, str(root / "Annotations" / "{}.xml"),
                                    str(root / "ImageSets" / "Main" / "test.txt"), name,
                                    ovthresh=IOU_THRESHOLDS[t], use_07_metric=True)
            assert fast[c, t] == pytest.approx(ap * 100, abs=1e-9), (name, t)


# --------------------------------------------------------------------------- the bootstrap
def test_interval_and_p_value_known_answers():
    """The interval and p-value on known bootstrap differences (the run-based tests below
    only check that an interval brackets something, which a 90% interval passes too): the
    central ``confidence`` interval by linear interpolation between order statistics, p =
    share of differences < 0 plus half the ties; NaN resamples (a class absent from the
    resample) are left out."""
    from imagescore_det.evaluation.bootstrap import _summary

    differences = np.array([3.0, -1.0, 0.0, 6.0, np.nan, 1.0, -2.0, 0.0, 2.0, 5.0, 4.0])

    def by_hand(q):  # the q-th percentile of the 10 finite values, interpolated linearly
        v = sorted(d for d in differences if d == d)
        pos = q / 100 * (len(v) - 1)
        i = int(pos)
        return v[i] + (pos - i) * (v[min(i + 1, len(v) - 1)] - v[i])

    s = _summary(10.0, 12.5, differences, 0.95)
    assert s["ci"] == pytest.approx([-1.775, 5.775], abs=1e-12)
    assert s["ci"] == pytest.approx([by_hand(2.5), by_hand(97.5)], abs=1e-12)
    assert s["p_value"] == pytest.approx((2 + 0.5 * 2) / 10)
    assert (s["a"], s["b"], s["difference"], s["resamples_used"]) == (10.0, 12.5, 2.5, 10)
    assert _summary(0.0, 0.0, differences, 0.5)["ci"] == pytest.approx([0.0, 3.75], abs=1e-12)
    empty = _summary(1.0, 1.0, np.array([np.nan, np.nan]), 0.95)
    assert np.isnan(empty["ci"]).all() and np.isnan(empty["p_value"])
    assert empty["resamples_used"] == 0


def test_identical_runs_interval_contains_zero_and_p_is_one_half(two_runs):
    result = compare_files(two_runs["a"]["path"], two_runs["a"]["path"])
    for key in ("AP50", "AP"):
        assert result[key]["difference"] == 0
        assert result[key]["ci"][0] <= 0 <= result[key]["ci"][1]
        assert result[key]["p_value"] == 0.5
    assert result["bootstrap"]["resamples"] == 1000


def test_run_against_ground_truth_is_significant(two_runs, tmp_path):
    truth = _ground_truth_run(two_runs["a"]["path"], tmp_path / "detections_truth.json")
    result = compare_files(two_runs["a"]["path"], truth)
    assert result["AP50"]["b"] == pytest.approx(100.0) and result["AP50"]["difference"] > 0
    assert result["AP50"]["p_value"] < 0.05 and result["AP"]["p_value"] < 0.05
    assert result["AP50"]["ci"][0] > 0
    assert compare_files(truth, two_runs["a"]["path"])["AP50"]["p_value"] > 0.95
    # seeded: the same numbers twice
    assert compare_files(two_runs["a"]["path"], truth, resamples=50) == \
        compare_files(two_runs["a"]["path"], truth, resamples=50)


def test_two_noisy_runs_interval_brackets_the_difference(two_runs):
    result = compare_files(two_runs["a"]["path"], two_runs["b"]["path"], resamples=300)
    a, b = two_runs["a"]["results"], two_runs["b"]["results"]
    assert result["AP50"]["a"] == a["AP50"] and result["AP50"]["b"] == b["AP50"]
    s = result["AP50"]
    assert s["ci"][0] < s["difference"] < s["ci"][1]
    assert set(result["per_class"]) == set(load_detections(two_runs["a"]["path"]).classes)
    md = format_markdown(result, "run_a", "run_b")
    assert "| AP50 |" in md and "### Per class" in md and "square" in md


def test_different_test_sets_are_refused(two_runs, tmp_path):
    data = json.load(open(two_runs["a"]["path"]))
    dropped = data["image_ids"].pop()
    del data["ground_truth"][dropped]
    for name in data["classes"]:
        d = data["detections"][name]
        keep = [k for k, i in enumerate(d["image_ids"]) if i != dropped]
        data["detections"][name] = {key: [d[key][k] for k in keep] for key in d}
    other = tmp_path / "detections_fewer.json"
    json.dump(data, open(other, "w"))
    with pytest.raises(TestSetMismatchError, match=r"different test sets.*1 images only in A"):
        compare_files(two_runs["a"]["path"], str(other))
    # same images, one box of the truth moved: refused too
    data = json.load(open(two_runs["a"]["path"]))
    first = next(i for i in data["image_ids"] if data["ground_truth"][i])
    data["ground_truth"][first][0][2] += 1
    json.dump(data, open(other, "w"))
    with pytest.raises(TestSetMismatchError, match="other ground truth on 1 shared images"):
        compare_files(two_runs["a"]["path"], str(other))
    # a detection on an image outside the test set is an error, not a silent drop
    data = json.load(open(two_runs["a"]["path"]))
    data["detections"][data["classes"][0]]["image_ids"][0] = "not_a_test_image"
    json.dump(data, open(other, "w"))
    with pytest.raises(DetectionsFileError, match="not in its test set"):
        load_detections(str(other))


# --------------------------------------------------------------------------- compare_runs.py
def _compare_runs(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, COMPARE_RUNS, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_compare_runs_tool(two_runs, tmp_path):
    truth = _ground_truth_run(two_runs["a"]["path"], tmp_path / "detections_tiny_voc_test.json")
    out_json, out_md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    r = _compare_runs(two_runs["a"]["dir"], truth, "--json", out_json, "--markdown", out_md)
    assert r.returncode == 0, r.stderr
    result = json.loads(out_json.read_text())
    assert result["AP50"]["p_value"] < 0.05 and result["AP50"]["ci"][0] > 0
    assert result["bootstrap"]["resamples"] == 1000 and result["bootstrap"]["seed"] == 0
    assert result["AP50"]["a"] == two_runs["a"]["results"]["AP50"]
    assert out_md.read_text() in r.stdout and "| AP (0.50:0.95) |" in r.stdout
    # identical runs (an OUTPUT_DIR against its own detections file)
    r = _compare_runs(two_runs["a"]["dir"], two_runs["a"]["path"], "--json", out_json)
    assert r.returncode == 0, r.stderr
    same = json.loads(out_json.read_text())
    assert same["AP50"]["p_value"] == 0.5 and same["AP50"]["ci"] == [0.0, 0.0]


def test_compare_runs_refuses_different_test_sets(two_runs, tmp_path):
    data = json.load(open(two_runs["b"]["path"]))
    data["image_ids"] = data["image_ids"][:-2]
    data["ground_truth"] = {i: data["ground_truth"][i] for i in data["image_ids"]}
    for name in data["classes"]:
        d = data["detections"][name]
        keep = [k for k, i in enumerate(d["image_ids"]) if i in data["ground_truth"]]
        data["detections"][name] = {key: [d[key][k] for k in keep] for key in d}
    data["dataset"] = "another_test"
    other = tmp_path / "detections_another_test.json"
    json.dump(data, open(other, "w"))
    r = _compare_runs(two_runs["a"]["dir"], other)
    assert r.returncode != 0
    assert "different test sets" in r.stderr and "'another_test' (4 images)" in r.stderr
    assert "2 images only in A" in r.stderr
    r = _compare_runs(tmp_path / "nowhere", other)
    assert r.returncode != 0 and "neither a run's output directory" in r.stderr
    empty = tmp_path / "old_run"
    empty.mkdir()
    r = _compare_runs(empty, other)
    assert r.returncode != 0 and "no per-image detections" in r.stderr and "--eval-only" in r.stderr


# --------------------------------------------------------------------------- paired baseline
PAIRED_OPTS = ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.PAIRED_BASELINE", "True",
               "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_unlabeled',)",
               "IMAGE_SCORE.START_ITER", "2", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
               "IMAGE_SCORE.GRID", "(4, 4)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def _train(cfg, resume=False):
    from imagescore_det.engine import Trainer

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _report(cfg):
    return json.load(open(os.path.join(cfg.OUTPUT_DIR, "report.json")))


@pytest.fixture(scope="module")
def paired_runs(tiny_voc, tmp_path_factory):
    """Two tiny runs with the paired baseline, each seeded as tools/train_net.py seeds a
    process, with a loader worker: random selection, and supervised-only (SELECTOR none)."""
    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine import load_config

    runs = {}
    for selector in ("random", "none"):
        out = tmp_path_factory.mktemp(f"paired_{selector}") / "out"
        cfg = load_config(TINY_CONFIG, tiny_cfg_opts(out, max_iter=4) + PAIRED_OPTS + [
            "IMAGE_SCORE.SELECTOR", selector, "DATALOADER.NUM_WORKERS", "1"])
        cfg.freeze()
        seed_all_rng(cfg.SEED)
        _train(cfg)
        runs[selector] = cfg
    return runs


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_paired_copy_is_the_supervised_run_bit_for_bit(paired_runs):
    """The copy starts from the same checkpoint with the same random stream (a loader worker
    too), so the copy of a SELECTOR none run is that run, and the copy of a random-selection
    run is that same supervised run: equal weights and AP, not close ones."""
    from imagescore_det.engine.paired import PAIRED_DIR

    none, rand = paired_runs["none"], paired_runs["random"]
    round_ckpt = torch.load(os.path.join(none.OUTPUT_DIR, "model_round1.pth"), weights_only=True)
    assert round_ckpt["iteration"] == 1 and round_ckpt["trainer"]["iteration"] == 1
    assert round_ckpt["round_iteration"] == 2 and len(round_ckpt["rng_states"]) == 1
    main_w = _weights(os.path.join(none.OUTPUT_DIR, "model_final.pth"))
    for copy in (none, rand):
        copy_w = _weights(os.path.join(copy.OUTPUT_DIR, PAIRED_DIR, "model_final.pth"))
        assert main_w.keys() == copy_w.keys()
        assert all(torch.equal(main_w[k], copy_w[k]) for k in main_w), copy.IMAGE_SCORE.SELECTOR
    report = _report(none)
    section = report["paired_baseline"]
    assert section["eval_after_supervised"] == report["eval_after"]
    assert _report(rand)["paired_baseline"]["eval_after_supervised"] == report["eval_after"]
    assert report["eval_after"]["bbox"]["AP50"] > 0
    cmp = section["comparisons"]["tiny_voc_test"]
    assert cmp["AP50"]["difference"] == 0 and cmp["AP50"]["p_value"] == 0.5
    assert section["summary"]["AP50_with_pseudo_labels"] == section["summary"]["AP50_supervised_only"]
    assert section["iterations"] == 2 and section["start_iteration"] == 2


def test_paired_report_of_a_selector_run_has_every_field(paired_runs):
    report = _report(paired_runs["random"])
    assert report["rounds"][0]["num_pseudo_images"] > 0 and report["config"]["paired_baseline"]
    s = report["paired_baseline"]["summary"]
    assert s["AP50_before"] == report["eval_before"]["bbox"]["AP50"]
    assert s["AP50_with_pseudo_labels"] == report["eval_after"]["bbox"]["AP50"]
    assert s["AP50_supervised_only"] == \
        report["paired_baseline"]["eval_after_supervised"]["bbox"]["AP50"]
    assert s["AP50_difference"] == pytest.approx(
        s["AP50_with_pseudo_labels"] - s["AP50_supervised_only"])
    lo, hi = s["AP50_difference_ci95"]
    assert lo <= hi and 0 <= s["p_value"] <= 1 and s["resamples"] == 1000
    per_class = report["paired_baseline"]["comparisons"]["tiny_voc_test"]["per_class"]
    assert set(per_class) == {"disc", "square", "triangle", "cross"}


def test_paired_baseline_resume(paired_runs):
    """--resume: a finished copy is not repeated; a copy killed part-way resumes from its
    own checkpoint; one made with other settings is refused; without the round checkpoint
    a run resumed after the round stops before training."""
    from imagescore_det.engine import Trainer, load_config
    from imagescore_det.engine.paired import PAIRED_DIR, RESULT_FILE

    cfg = paired_runs["none"]
    out = cfg.OUTPUT_DIR
    summary = _report(cfg)["paired_baseline"]["summary"]
    result_file = os.path.join(out, PAIRED_DIR, RESULT_FILE)
    stamp = os.path.getmtime(os.path.join(out, PAIRED_DIR, "metrics.json"))

    def again(*opts):  # NUM_WORKERS differs from the run's: allowed on a resume
        c = load_config(TINY_CONFIG, tiny_cfg_opts(out, max_iter=4) + PAIRED_OPTS + [
            "IMAGE_SCORE.SELECTOR", "none", *opts])
        c.freeze()
        return c

    _train(again(), resume=True)
    assert os.path.getmtime(os.path.join(out, PAIRED_DIR, "metrics.json")) == stamp
    assert _report(cfg)["paired_baseline"]["summary"] == summary

    os.remove(result_file)  # killed before it finished
    _train(again(), resume=True)
    assert os.path.isfile(result_file)
    assert _report(cfg)["paired_baseline"]["summary"] == summary

    with pytest.raises(RuntimeError, match=rf"(?s)other settings.*SOLVER.BASE_LR: "
                                           rf"{cfg.SOLVER.BASE_LR} then, 0.01 now.*Delete"):
        _train(again("SOLVER.BASE_LR", "0.01"), resume=True)

    os.remove(result_file)
    os.remove(os.path.join(out, "model_round1.pth"))
    trainer = Trainer(again())
    trainer.resume_or_load(resume=True)
    with pytest.raises(RuntimeError, match="model_round1.pth.*is missing.*PAIRED_BASELINE False"):
        trainer.train()


def test_a_branch_from_the_round_checkpoint_is_the_run_itself(paired_runs, tmp_path):
    """bench_quality compares selectors by branching each from one run's round checkpoint:
    a branch with the run's own settings must end with that run's weights, bit for bit,
    and a branch with another selector must select with the same detector."""
    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine import load_config
    from imagescore_det.engine.paired import branch_from_round

    source = paired_runs["random"]

    def branch(name, selector, edit=None, opts=()):
        out = tmp_path / name
        branch_from_round(source.OUTPUT_DIR, str(out))
        if edit:
            edit(out)
        cfg = load_config(TINY_CONFIG, tiny_cfg_opts(out, max_iter=4) + PAIRED_OPTS + [
            "IMAGE_SCORE.SELECTOR", selector, "DATALOADER.NUM_WORKERS", "1",
            "IMAGE_SCORE.PAIRED_BASELINE", "False", *opts])
        cfg.freeze()
        seed_all_rng(cfg.SEED + 1)  # another process seed: the replay hook must not care
        _train(cfg, resume=True)
        return cfg

    same = branch("same", "random")
    a = _weights(os.path.join(source.OUTPUT_DIR, "model_final.pth"))
    b = _weights(os.path.join(same.OUTPUT_DIR, "model_final.pth"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _report(same)["eval_after"] == _report(source)["eval_after"]
    assert _report(same)["eval_before"] == _report(source)["eval_before"]
    assert _report(same)["rounds"][0]["num_pseudo_images"] == \
        _report(source)["rounds"][0]["num_pseudo_images"]

    # the branch reads the source's "before" evaluation instead of evaluating again
    marker = {"bbox": {"AP": 1.0, "AP50": 12.5, "AP75": 0.5}}

    def mark(out):
        with open(os.path.join(out, "image_score", "eval_before.json"), "w") as f:
            json.dump(marker, f)

    other = branch("softmax", "softmax", edit=mark, opts=["IMAGE_SCORE.ANALYZE_POOL", "True"])
    assert _report(other)["eval_before"] == marker
    assert _report(other)["rounds"][0]["selector"] == "softmax"
    assert _report(other)["rounds"][0]["iteration"] == 2

    # bench_quality measures a branch from its own round folder: the AUROC over the pool
    # images with a pseudo-box, positive = none of them wrong (brute force: all pairs)
    from conftest import load_tool
    from imagescore_det.engine.paired import PAIRED_DIR

    row = load_tool("bench_quality", "benchmarks").measure(
        other.OUTPUT_DIR, os.path.join(source.OUTPUT_DIR, PAIRED_DIR))
    with open(os.path.join(other.OUTPUT_DIR, "image_score", "round_1", "scores.csv")) as f:
        pool = [r for r in csv.DictReader(f)
                if int(r["pool_true_positives"]) + int(r["pool_false_positives"]) > 0]
    pos = [float(r["score"]) for r in pool if r["pool_false_positives"] == "0"]
    neg = [float(r["score"]) for r in pool if r["pool_false_positives"] != "0"]
    assert row["auroc_images"] == len(pool) > 0
    assert row["share_correct_images"] == pytest.approx(len(pos) / len(pool))
    if pos and neg:
        pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
        assert row["auroc"] == pytest.approx(sum(pairs) / len(pairs))
    else:
        assert row["auroc"] is None
    assert row["ap50_before"] == 12.5 and row["vs_none"]["test_images"] > 0
    with pytest.raises(FileExistsError, match="already holds a run"):
        branch_from_round(source.OUTPUT_DIR, other.OUTPUT_DIR)
    with pytest.raises(FileNotFoundError, match="PAIRED_BASELINE True"):
        branch_from_round(str(tmp_path / "nothing"), str(tmp_path / "x"))


def test_paired_baseline_needs_the_round(tiny_cfg):
    from imagescore_det.engine import ConfigError

    with pytest.raises(ConfigError, match="PAIRED_BASELINE.*IMAGE_SCORE.ENABLED True"):
        tiny_cfg("IMAGE_SCORE.PAIRED_BASELINE", "True")
    with pytest.raises(ConfigError, match="PAIRED_BASELINE.*START_ITER=4 < SOLVER.MAX_ITER=4"):
        tiny_cfg(*PAIRED_OPTS, "IMAGE_SCORE.SELECTOR", "none", "IMAGE_SCORE.START_ITER", "4")


def test_quickstart_config_has_the_paired_baseline():
    from imagescore_det.engine import load_config

    configs = os.path.join(REPO, "configs", "synthetic")
    assert load_config(os.path.join(configs, "imagescore_V16tiny_quick.yaml")) \
        .IMAGE_SCORE.PAIRED_BASELINE
    # the supervised config is its own baseline; large runs leave it off (the default)
    assert not load_config(os.path.join(configs, "supervised_V16tiny_quick.yaml")) \
        .IMAGE_SCORE.PAIRED_BASELINE
    assert not load_config(os.path.join(REPO, "configs", "voc07_voc12",
                                        "faster_rcnn_V16_imagescore.yaml")).IMAGE_SCORE.PAIRED_BASELINE


def test_quickstart_summary_shows_the_paired_baseline(tiny_voc, tmp_path):
    """tools/train_net.py on the quickstart config (tiny overrides): the printed summary
    and report.json have AP50 before, with pseudo-labels, supervised only, and the
    difference with its interval."""
    root = tmp_path / "datasets"
    root.mkdir()
    os.symlink(tiny_voc["root"], root / "synthetic_voc")
    out = tmp_path / "quick"
    opts = [o.replace("tiny_voc_", "synthetic_voc_") for o in tiny_cfg_opts(out, max_iter=3)]
    opts += ["IMAGE_SCORE.START_ITER", "2", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
             "IMAGE_SCORE.GRID", "(4, 4)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                        "--config-file", os.path.join(REPO, "configs", "synthetic",
                                                      "imagescore_V16tiny_quick.yaml"), *opts],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    summary = log[log.rindex("Image Score run summary:"):]
    assert "VOC AP50 before pseudo-labels:" in summary
    assert "with pseudo-labels" in summary and "supervised only: a paired copy" in summary
    assert "pseudo-labels - supervised:" in summary and "95% interval [" in summary
    report = json.loads((out / "report.json").read_text())
    s = report["paired_baseline"]["summary"]
    for key in ("AP50_before", "AP50_with_pseudo_labels", "AP50_supervised_only",
                "AP50_difference", "AP50_difference_ci95", "p_value", "test_images",
                "resamples", "AP_difference", "AP_difference_ci95"):
        assert s[key] is not None, key
    assert s["AP50_difference"] == pytest.approx(
        s["AP50_with_pseudo_labels"] - s["AP50_supervised_only"])
    assert s["resamples"] == 1000 and s["test_images"] == 6
    assert report["rounds"][0]["selector"] == "image_score"
    assert (out / "paired_supervised" / "inference" / "detections_synthetic_voc_test.json").is_file()
    # compare_runs.py gives the same comparison from the two folders
    cmp = _compare_runs(out / "paired_supervised", out, "--json", tmp_path / "c.json")
    assert cmp.returncode == 0, cmp.stderr
    assert json.loads((tmp_path / "c.json").read_text())["AP50"]["ci"] == s["AP50_difference_ci95"]


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_resampling_path_equals_the_exact_path_on_the_full_set(tmp_path, use_07_metric):
    """The fast resampling path (points at true positives only) with every image drawn once
    gives the exact path's AP, with difficult objects, ties and both metrics."""
    anno, image_set, truth = _handmade_voc(str(tmp_path / "voc"))
    parse_rec.cache_clear()
    rng = np.random.default_rng(1)
    predictions = {0: [], 1: []}
    for image, objs in truth.items():
        for cls, box, _ in objs + [("a", [0, 0, 30, 30], 0), ("b", [50, 50, 90, 90], 0)]:
            for _ in range(int(rng.integers(1, 4))):
                b = np.array(box, dtype=float) + rng.normal(0, 5, 4)
                predictions[["a", "b"].index(cls)].append(
                    f"{image} {rng.integers(0, 5) / 4:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}")
    path = str(tmp_path / "detections_hand.json")
    write_detections(path, "hand", ["a", "b"], image_set, anno, use_07_metric, predictions)
    run = PreparedRun(load_detections(path))
    assert any(len(p) for c in run.curves for p in c.ignored_pos)  # difficult matches occur
    full = run.full_set_ap()
    fast = run.resampled_ap(np.ones((2, len(truth))))
    np.testing.assert_allclose(fast[0], full, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast[1], full, rtol=0, atol=1e-9)

