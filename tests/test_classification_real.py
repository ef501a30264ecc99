"""benchmarks/classification_real.py: crops, bad input, selection, statistics, end to end.

Everything runs on tiny VOC-layout roots drawn here (solid-colour boxes), not on real data.
"""
import itertools
import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import classification_real as cr  # noqa: E402
import _classification_real_report as rep  # noqa: E402

BLUE, RED, GREEN, YELLOW = (0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0)


def write_image(voc, image_id, size, background, objects, write_xml=True, jpeg=True):
    """objects: (class, (xmin, ymin, xmax, ymax) 1-based inclusive, colour, difficult)."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8) + np.array(background, np.uint8)
    for _, (x0, y0, x1, y1), colour, _ in objects:
        pixels[max(0, y0 - 1):max(0, y1), max(0, x0 - 1):max(0, x1)] = colour
    Image.fromarray(pixels).save(os.path.join(voc, "JPEGImages", image_id + ".jpg"), quality=98)
    if not write_xml:
        return
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, _, diff in objects)
    with open(os.path.join(voc, "Annotations", image_id + ".xml"), "w") as f:
        f.write(f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
                f"{body}</annotation>")


def make_root(tmp_path, splits):
    """splits: {split: [(image_id, size, background, objects), ...]}; returns the root."""
    root = tmp_path / "root"
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        for image_id, size, background, objects in images:
            write_image(str(voc), image_id, size, background, objects)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(i[0] + "\n" for i in images))
    return str(root)


def one_cat(image_id):
    return (image_id, (80, 60), BLUE, [("cat", (21, 11, 60, 50), RED, False)])


def crops_of(root, tmp_path, **kw):
    args = dict(size=16, context=0.15, min_box=16)
    args.update(kw)
    return cr.load_crops(root, str(tmp_path / "work"), **args)


# ------------------------------------------------------------------------------ crops
def test_classes_are_detectron2s():
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES
    assert tuple(CLASS_NAMES) == cr.CLASSES


def test_crops_known_answer(tmp_path):
    objects = [("cat", (21, 11, 60, 50), RED, False),       # 40 x 40
               ("dog", (101, 21, 130, 70), GREEN, False),   # 30 x 50
               ("car", (141, 5, 150, 14), YELLOW, False),   # 10 x 10: smaller than 16 px
               ("bird", (141, 41, 170, 70), RED, True),     # difficult
               ("unicorn", (171, 41, 199, 90), RED, False)]  # not a VOC class
    image = ("a", (200, 100), BLUE, objects)
    root = make_root(tmp_path, {s: [image] for s in cr.SPLITS})
    data, stats = crops_of(root, tmp_path)
    x, y = data["labeled"]
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.uint8
    assert [cr.CLASSES[c] for c in y] == ["cat", "dog"]
    # the box fills the middle; 0.15 of its side of context on each side is background
    assert np.abs(x[0, 4:12, 4:12].astype(int) - RED).max() < 40
    assert np.abs(x[0, 8, 0].astype(int) - BLUE).max() < 60
    assert np.abs(x[1, 4:12, 6:10].astype(int) - GREEN).max() < 40
    assert stats["labeled"]["objects"] == 5
    assert stats["labeled"]["objects_skipped_unknown_class"] == 1
    assert stats["labeled"]["objects_skipped_smaller_than_16px"] == 1
    assert stats["labeled"]["objects_skipped_difficult"] == 1
    # cached: a second call reads the npz, same arrays
    again, _ = crops_of(root, tmp_path)
    assert np.array_equal(again["labeled"][0], x)
    assert len([f for f in os.listdir(tmp_path / "work") if f.endswith(".npz")]) == 1


def test_missing_split_file_names_it(tmp_path):
    root = make_root(tmp_path, {"labeled": [one_cat("a")], "unlabeled": [one_cat("b")]})
    with pytest.raises(cr.DataError, match=r"ImageSets/Main/test\.txt does not exist.*VOC2007/"):
        crops_of(root, tmp_path)
    with pytest.raises(cr.DataError, match=r"nowhere/VOC2007/ImageSets/Main/labeled\.txt"):
        crops_of(str(tmp_path / "nowhere"), tmp_path)


def test_empty_split_is_an_error(tmp_path):
    root = make_root(tmp_path, {"labeled": [one_cat("a")], "unlabeled": [one_cat("b")],
                                "test": []})
    with pytest.raises(cr.DataError, match=r"test\.txt.*empty_split"):
        crops_of(root, tmp_path)


def test_image_without_annotation_is_a_counted_skip(tmp_path):
    root = make_root(tmp_path, {"labeled": [one_cat("a"), one_cat("b")],
                                "unlabeled": [one_cat("c")], "test": [one_cat("d")]})
    os.remove(os.path.join(root, "VOC2007", "Annotations", "b.xml"))
    data, stats = crops_of(root, tmp_path)
    assert len(data["labeled"][1]) == 1
    assert stats["labeled"]["images_skipped_missing_annotation"] == 1
    assert stats["labeled"]["skipped_files"] == [os.path.join(root, "VOC2007", "Annotations", "b.xml")]


def test_unreadable_jpeg_is_a_counted_skip(tmp_path):
    root = make_root(tmp_path, {"labeled": [one_cat("a"), one_cat("b")],
                                "unlabeled": [one_cat("c")], "test": [one_cat("d")]})
    with open(os.path.join(root, "VOC2007", "JPEGImages", "b.jpg"), "wb") as f:
        f.write(b"<html>not found</html>")
    data, stats = crops_of(root, tmp_path)
    assert len(data["labeled"][1]) == 1
    assert stats["labeled"]["images_skipped_not_an_image"] == 1
    assert stats["labeled"]["skipped_files"][0].endswith("b.jpg")


def test_box_outside_image_is_clipped_and_counted(tmp_path):
    objects = [("cat", (41, 11, 120, 50), RED, False),   # right edge 40 px past the 80 px image
               ("dog", (200, 10, 240, 50), GREEN, False)]  # entirely outside
    root = make_root(tmp_path, {"labeled": [("a", (80, 60), BLUE, objects)],
                                "unlabeled": [one_cat("c")], "test": [one_cat("d")]})
    data, stats = crops_of(root, tmp_path)
    x, y = data["labeled"]
    assert [cr.CLASSES[c] for c in y] == ["cat"]
    assert stats["labeled"]["boxes_clipped_to_image"] == 2
    assert stats["labeled"]["objects_skipped_empty_box"] == 1
    assert np.abs(x[0, 5:11, 5:11].astype(int) - RED).max() < 40  # centred on the clipped box


# ------------------------------------------------------------------------------ selection
def brute_force_select(scores, pred, alpha, num_classes):
    chosen = []
    for c in range(num_classes):
        members = sorted(np.flatnonzero(pred == c), key=lambda i: (-scores[i], i))
        chosen += members[:math.ceil(alpha * len(members) - 1e-9)]
    return sorted(chosen)


def test_selection_alpha_c_rule_and_equal_counts():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 5))
        alpha = float(rng.choice([0.3, 0.5, rng.uniform(0.05, 1.0)]))
        pred = rng.integers(0, k, n)
        quotas = cr.class_quotas(pred, k, alpha)
        counts = set()
        for scores in (rng.random(n), rng.integers(-3, 1, n).astype(float),  # many ties
                       -np.arange(n, dtype=float), np.arange(n, dtype=float)):
            got = cr.select(scores, pred, quotas)
            assert got.tolist() == brute_force_select(scores, pred, alpha, k), trial
            counts.add(len(got))
        assert counts == {int(quotas.sum())}  # every selector: the same number of images


def test_selection_prefers_high_scores():
    pred = np.zeros(10, int)
    scores = np.arange(10.0)
    assert cr.select(scores, pred, np.array([3])).tolist() == [7, 8, 9]


def test_selection_shortfall_keeps_the_total():
    # quotas from the checkpoint: 3 of class 0, 3 of class 1; now class 1 is predicted once
    pred = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], float)
    got = cr.select(scores, pred, np.array([3, 3]))
    assert len(got) == 6
    assert got.tolist() == [0, 1, 2, 3, 4, 9]  # class 1's only crop, then class 0's next best


def _tiny_data(rng, n_lab=20, n_pool=30, n_test=6, classes=3, size=8):
    import torch

    def x(n):
        return torch.as_tensor(rng.standard_normal((n, 3, size, size)), dtype=torch.float32)

    return {"x_lab": x(n_lab), "y_lab": rng.integers(0, classes, n_lab),
            "x_pool": x(n_pool), "y_pool": rng.integers(0, classes, n_pool),
            "x_test": x(n_test), "y_test": rng.integers(0, classes, n_test)}


def _continue(name, data, quotas, monkeypatch, seed=0, epochs=2):
    """continue_run from one fixed checkpoint; returns (result, {epoch: (chosen, labels)})."""
    import argparse

    import torch

    seen = []
    real_run_epoch = getattr(cr.run_epoch, "real", cr.run_epoch)

    def spy(model, opt, x, y, lr, gen, batch=128, num_samples=None):
        seen.append((x.shape[0], y.clone(), num_samples))
        return real_run_epoch(model, opt, x, y, lr, gen, batch, num_samples)

    spy.real = real_run_epoch
    monkeypatch.setattr(cr, "run_epoch", spy)
    torch.manual_seed(0)
    model = cr.SmallCNN(len(cr.CLASSES), widths=(4, 4, 4, 4))
    allowed = torch.ones(len(cr.CLASSES), dtype=torch.bool)
    args = argparse.Namespace(continue_lr=0.01, continue_epochs=epochs)
    run = cr.continue_run(name, model, data, args, seed, quotas, allowed)
    return run, seen


def test_oracle_chooses_what_random_chooses_and_trains_on_the_true_labels(monkeypatch):
    import torch

    rng = np.random.default_rng(5)
    data = _tiny_data(rng)
    quotas = np.zeros(len(cr.CLASSES), dtype=np.int64)
    quotas[:3] = [3, 2, 4]
    random_run, random_seen = _continue("random", data, quotas, monkeypatch, epochs=1)
    oracle_run, oracle_seen = _continue("oracle", data, quotas, monkeypatch, epochs=1)
    n_lab = len(data["y_lab"])
    # the same crops (same scores: random's stream), the first epoch from the same checkpoint
    assert random_run["selected"][0]["chosen"] == oracle_run["selected"][0]["chosen"]
    chosen = np.asarray(oracle_run["selected"][0]["chosen"])
    assert len(chosen) == quotas.sum()
    np.testing.assert_array_equal(oracle_seen[0][1][n_lab:].numpy(), data["y_pool"][chosen])
    np.testing.assert_array_equal(oracle_seen[0][1][:n_lab].numpy(), data["y_lab"])
    assert oracle_run["selected"][0]["precision"] == 1.0
    # random trains on the model's own predictions of the same crops
    torch.manual_seed(0)
    model = cr.SmallCNN(len(cr.CLASSES), widths=(4, 4, 4, 4))
    pred = cr.predict(model, data["x_pool"], torch.ones(len(cr.CLASSES), dtype=torch.bool))
    np.testing.assert_array_equal(random_seen[0][1][n_lab:].numpy(), pred.argmax(1)[chosen])


def test_none_trains_as_many_sgd_steps_as_the_selectors(monkeypatch):
    rng = np.random.default_rng(6)
    data = _tiny_data(rng, n_lab=150, n_pool=200)
    quotas = np.zeros(len(cr.CLASSES), dtype=np.int64)
    quotas[:3] = [40, 30, 50]  # 150 + 120 = 270 crops an epoch: 3 batches of 128, not 2
    none_run, none_seen = _continue("none", data, quotas, monkeypatch)
    random_run, _ = _continue("random", data, quotas, monkeypatch)
    assert none_run["steps"] == random_run["steps"] == [3, 3]
    assert [s[2] for s in none_seen] == [270, 270] and none_seen[0][0] == 150


def test_run_epoch_num_samples_repeats_whole_permutations():
    import torch

    model = cr.SmallCNN(3, widths=(4, 4, 4, 4))
    x = torch.zeros(10, 3, 8, 8)
    y = torch.arange(10) % 3
    seen = []
    real = model.forward
    model.forward = lambda xb: (seen.append(len(xb)), real(xb))[1]
    steps = cr.run_epoch(model, cr.sgd(model, 0.01), x, y, 0.01, torch.Generator().manual_seed(0),
                         batch=4, num_samples=23)
    assert steps == 6 and seen == [4, 4, 4, 4, 4, 3]
    # two whole passes over the 10 crops, then 3 more: every crop twice, 3 of them thrice
    counts = cr.epoch_indices(10, 23, torch.Generator().manual_seed(1)).bincount().tolist()
    assert sorted(counts) == [2] * 7 + [3] * 3
    assert cr.epoch_indices(10, None, torch.Generator().manual_seed(1)).sort().values.tolist() \
        == list(range(10))


# ------------------------------------------------------------------------------ statistics
def test_paired_bootstrap_p_values():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 3, 300)
    a = (rng.random(300) < 0.5).astype(float)
    same = rep.paired_bootstrap(a, a.copy(), groups, resamples=300)
    assert all(v["p_value"] == 0.5 and v["difference"] == 0 for v in same.values())
    b = np.ones(300)  # right wherever A is wrong, and wherever A is right
    better = rep.paired_bootstrap(a, b, groups, resamples=300)
    assert better["overall"]["p_value"] < 0.05 and better[0]["p_value"] < 0.05
    assert set(better) == {"overall", 0, 1, 2}
    worse = rep.paired_bootstrap(b, a, groups, resamples=300)
    assert worse["overall"]["p_value"] > 0.95
    noise = rep.paired_bootstrap(a, (rng.random(300) < 0.5).astype(float), groups, 300)
    assert 0.0 <= noise["overall"]["p_value"] <= 1.0


def test_auroc_against_pairs():
    assert rep.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert rep.auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert rep.auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert rep.auroc([1, 2], [1, 1]) is None
    rng = np.random.default_rng(3)
    for _ in range(20):
        s, pos = rng.integers(0, 5, 25).astype(float), rng.random(25) < 0.4
        if pos.all() or not pos.any():
            continue
        pairs = [(1.0 if p > q else 0.5 if p == q else 0.0)
                 for p, q in itertools.product(s[pos], s[~pos])]
        assert rep.auroc(s, pos) == pytest.approx(np.mean(pairs))


def test_decile_accuracy_low_to_high():
    scores = np.arange(100.0)
    correct = scores >= 50
    assert rep.decile_accuracy(scores, correct) == [0.0] * 5 + [1.0] * 5
    assert rep.decile_accuracy(-scores, correct) == [1.0] * 5 + [0.0] * 5


# ------------------------------------------------------------------------------ end to end
def tiny_split(prefix, count, rng):
    colours = {"cat": RED, "dog": GREEN, "car": YELLOW}
    images = []
    for i in range(count):
        objects = []
        for j, name in enumerate(rng.choice(list(colours), 2, replace=False)):
            x0 = 5 + 45 * j + int(rng.integers(0, 5))
            side = int(rng.integers(20, 36))
            objects.append((str(name), (x0, 8, x0 + side - 1, 8 + side - 1), colours[name], False))
        images.append((f"{prefix}{i}", (100, 50), BLUE, objects))
    return images


@pytest.mark.filterwarnings("ignore:ImageScorer. no fitted image has class")  # 3 of 20 here
def test_main_end_to_end(tmp_path):
    rng = np.random.default_rng(4)
    root = make_root(tmp_path, {"labeled": tiny_split("l", 8, rng),
                                "unlabeled": tiny_split("u", 8, rng),
                                "test": tiny_split("t", 5, rng)})
    out = tmp_path / "res" / "cls.json"
    argv = ["--root", root, "--seeds", "0", "--epochs", "2", "--continue-epochs", "1",
            "--output", str(out), "--work-dir", str(tmp_path / "work"), "--crop-size", "16",
            "--resamples", "50"]
    summary = cr.main(argv)
    for ext in (".json", ".png", ".md"):
        assert (tmp_path / "res" / ("cls" + ext)).stat().st_size > 0
    result = json.loads(out.read_text())
    assert set(result["summary"]["selectors"]) == set(cr.SELECTORS)
    counts = {s: e["selected_count"]["mean"] for s, e in summary["selectors"].items()
              if s != "none"}
    assert len(set(counts.values())) == 1  # equal counts
    assert counts["softmax"] == sum(result["per_seed"][0]["pool"]["quotas"])
    assert summary["selectors"]["oracle"]["selected_precision_first_epoch"]["mean"] >= max(
        e["selected_precision_first_epoch"]["mean"] for s, e in summary["selectors"].items()
        if s != "none")
    assert result["meta"]["crops"] == {"labeled": 16, "unlabeled": 16, "test": 10}
    md = (tmp_path / "res" / "cls.md").read_text()
    assert "## Answers" in md and "cls.png" in md and "| person |" not in md
    meta = result["meta"]
    assert meta["root"] == os.path.relpath(root, REPO)  # not this machine's absolute path
    assert meta["reused_seconds"] == 0.0
    assert meta["wall_seconds"] == meta["invocation_seconds"] >= meta["compute_seconds"] > 0
    # a rerun reuses the seed's results from the work dir (and gives the same summary)
    again = cr.main(argv)
    assert again["selectors"]["image_score"]["accuracy_after"] == \
        summary["selectors"]["image_score"]["accuracy_after"]
    # issue 19.9: its wall time counts the reused steps as they took when they ran (it
    # recorded 1.8 s, the reading of the cache, for an 18-minute run)
    rerun = json.loads(out.read_text())["meta"]
    assert rerun["reused_seconds"] == meta["compute_seconds"] == rerun["compute_seconds"]
    assert rerun["wall_seconds"] == rerun["invocation_seconds"] + rerun["reused_seconds"]
    assert "wall time: " in (tmp_path / "res" / "cls.md").read_text()
