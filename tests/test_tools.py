"""tools/score_images.py and tools/visualize_pseudo_labels.py, on a tiny trained model.

One tiny training (3 iterations, a selection round at iteration 1) gives both the checkpoint
that score_images.py loads and a real round directory for visualize_pseudo_labels.py.
score_images.py runs once as a subprocess on the same tiny images, reached as
``synthetic_voc_*`` through DETECTRON2_DATASETS (a symlink to the tiny_voc fixture's root);
the other checks call the tools' main() in-process (importing Detectron2 takes ~10 s).
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TINY_CONFIG, load_tool, tiny_cfg_opts

IMAGE_SCORE_BATCH = "2"  # > 1, so that padding (valid_sizes) matters


def _run(args, env_root, timeout=120):
    env = dict(os.environ, DETECTRON2_DATASETS=str(env_root), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _named(opts, prefix):
    """tiny_cfg_opts with the tiny_voc_* names replaced by ``prefix``_*."""
    return [o.replace("tiny_voc_", prefix + "_") for o in opts]


@pytest.fixture(scope="module")
def trained(tiny_voc, tmp_path_factory):
    """A 3-iteration tiny model with one image_score round at iteration 1 (no evaluation)."""
    from imagescore_det.engine import Trainer, load_config

    tmp = tmp_path_factory.mktemp("tools")
    root = tmp / "datasets"
    root.mkdir()
    os.symlink(tiny_voc["root"], root / "synthetic_voc")
    out = tmp / "train"
    opts = tiny_cfg_opts(out, max_iter=3) + [
        "DATASETS.TEST", "()", "IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.START_ITER", "1",
        "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_unlabeled',)",
        "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0", "IMAGE_SCORE.EVAL_BEFORE", "False",
        "IMAGE_SCORE.BATCH_SIZE", IMAGE_SCORE_BATCH]
    cfg = load_config(TINY_CONFIG, opts)
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = out / "model_final.pth"
    assert weights.is_file()
    return {"root": root, "out": out, "weights": str(weights), "opts": opts, "tmp": tmp,
            "round_dir": out / "image_score" / "round_1"}


def _model(cfg, weights):
    from detectron2.checkpoint import DetectionCheckpointer

    from imagescore_det.engine import Trainer

    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return model.eval()


def _reference_scores(cfg, model, labeled, pool):
    """Image Score by hand: own image reading/resizing/batching, ImageScorer.fit/score on
    the backbone (same layers and batches as the tool)."""
    import detectron2.data.transforms as T
    from detectron2.data.detection_utils import read_image

    from imagescore_det.engine.selection import layers_from_cfg
    from imagescore_det.scoring import ImageBatch, ImageScorer

    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    bs = cfg.IMAGE_SCORE.BATCH_SIZE

    def batches(dicts):
        for i in range(0, len(dicts), bs):
            inputs = []
            for d in dicts[i:i + bs]:
                img = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
                img = resize.get_transform(img).apply_image(img)
                inputs.append({"image": torch.as_tensor(img.transpose(2, 0, 1).copy())})
            images = model.preprocess_image(inputs)
            yield ImageBatch(images.tensor, valid_sizes=list(images.image_sizes))

    s = cfg.IMAGE_SCORE
    scorer = ImageScorer(model.backbone, layers=layers_from_cfg(cfg, model.backbone),
                         similarity=s.SIMILARITY, threshold_ratio=s.THRESHOLD_RATIO,
                         grid=tuple(s.GRID))
    # BATCH_SIZE > 1 batches images in order of their test-time size (engine/batching.py)
    from imagescore_det.engine.batching import size_order

    labeled = [labeled[i] for i in size_order(cfg, labeled)]
    pool_order = size_order(cfg, pool)
    with torch.no_grad():
        scorer.fit(batches(labeled))
        scores = np.empty(len(pool))
        scores[pool_order] = scorer.score(batches([pool[i] for i in pool_order])).numpy()
        return scores, scorer


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------- score_images
def test_score_images_matches_image_scorer(trained, tiny_voc):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import load_config
    from imagescore_det.scoring import ImageScorer

    out_dir = trained["tmp"] / "scores"
    opts = _named(trained["opts"], "synthetic_voc") + ["MODEL.WEIGHTS", trained["weights"]]
    # the mask is fitted on the 6 test images (fewer than the 10 labeled: faster)
    r = _run(["tools/score_images.py", "--config-file", TINY_CONFIG, "--dataset",
              "synthetic_voc_unlabeled", "--labeled-datasets", "synthetic_voc_test",
              "--output", str(out_dir)] + opts, trained["root"])
    assert r.returncode == 0, r.stderr[-3000:]

    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    rows = _read_csv(out_dir / "scores.csv")
    assert [row["image_id"] for row in rows] == [d["image_id"] for d in pool]
    scores = np.array([float(row["score"]) for row in rows])
    ranks = np.array([int(row["rank"]) for row in rows])
    assert (scores <= 0).all()
    assert sorted(ranks) == list(range(1, len(pool) + 1))
    assert (np.diff(scores[np.argsort(ranks)]) <= 0).all()  # rank 1 = highest score
    domains = tiny_voc["meta"]["domains"]
    assert [row["domain"] for row in rows] == [domains[d["image_id"]] for d in pool]

    # the same scores, computed here by an independent path through ImageScorer
    cfg = load_config(TINY_CONFIG, _named(opts, "tiny_voc"))
    model = _model(cfg, trained["weights"])
    ref, ref_scorer = _reference_scores(cfg, model, DatasetCatalog.get("tiny_voc_test"), pool)
    np.testing.assert_allclose(scores, ref, rtol=0, atol=1e-9)
    saved = ImageScorer.load(str(out_dir / "mask.pt"), model.backbone)
    assert saved.layer_names == ref_scorer.layer_names
    assert all(torch.equal(a, b) for a, b in zip(saved.masks, ref_scorer.masks))

    _assert_png(out_dir / "score_histogram.png")
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["count"] == len(pool)
    assert summary["labeled_datasets"] == ["synthetic_voc_test"]
    assert summary["mean_score"] == pytest.approx(scores.mean())
    assert summary["max_score"] == pytest.approx(scores.max())
    for dom, v in summary["per_domain"].items():
        m = np.array([row["domain"] == dom for row in rows])
        assert v["count"] == m.sum() and v["mean_score"] == pytest.approx(scores[m].mean())
    assert summary["seconds"] > 0
    assert not [f for f in os.listdir(out_dir) if f.endswith(".tmp")]


def test_score_images_softmax_in_process(trained, tmp_path):
    from detectron2.data import DatasetCatalog

    tool = load_tool("score_images")
    args = tool.parse_args(["--config-file", TINY_CONFIG, "--dataset", "tiny_voc_test",
                            "--selector", "softmax", "--output", str(tmp_path)]
                           + trained["opts"] + ["MODEL.WEIGHTS", trained["weights"],
                                                "IMAGE_SCORE.BOX_SCORE_THRESH", "0.5"])
    summary = tool.main(args)
    rows = _read_csv(tmp_path / "scores.csv")
    assert len(rows) == summary["count"] == len(DatasetCatalog.get("tiny_voc_test"))
    assert "domain" in rows[0]  # the synthetic test split is all typical
    scores = np.array([float(row["score"]) for row in rows])
    assert ((scores >= -1) & (scores <= 1)).all()
    assert not (tmp_path / "mask.pt").exists()
    _assert_png(tmp_path / "score_histogram.png")


def test_score_images_errors(trained, tmp_path):
    tool = load_tool("score_images")
    base = ["--config-file", TINY_CONFIG, "--dataset", "tiny_voc_unlabeled",
            "--output", str(tmp_path)] + trained["opts"]
    with pytest.raises(tool.ToolError, match=r"MODEL\.WEIGHTS is empty.*model_final\.pth"):
        tool.main(tool.parse_args(base))
    with pytest.raises(tool.ToolError, match="does not exist"):
        tool.main(tool.parse_args(base + ["MODEL.WEIGHTS", str(tmp_path / "nope.pth")]))
    # a checkpoint of another architecture: named, with the mismatching shapes and the fix
    with pytest.raises(tool.ToolError) as e:
        tool.main(tool.parse_args(base + ["MODEL.WEIGHTS", trained["weights"],
                                          "MODEL.VGG.WIDTH_MULT", "0.125"]))
    msg = str(e.value)
    assert trained["weights"] in msg and "does not fit" in msg and "shape (4," in msg
    assert "--config-file" in msg
    assert not (tmp_path / "scores.csv").exists()


# --------------------------------------------------------------------------- visualize
def test_visualize_real_round(trained):
    round_dir = trained["round_dir"]
    with open(round_dir / "selection.json") as f:
        manifest = json.load(f)
    out_dir = trained["tmp"] / "vis"
    tool = load_tool("visualize_pseudo_labels")  # in-process: a subprocess costs ~10 s
    res = tool.main(tool.parse_args(["--round-dir", str(round_dir), "--num", "3", "--output",
                                     str(out_dir), "--show-truth", "--max-boxes", "5"]))
    assert res["montage"] == str(out_dir / "pseudo_labels_montage.png")
    assert all(e["truth_boxes"] for e in res["images"])  # the tiny images have VOC XML
    pngs = sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))
    n = min(3, manifest["num_pseudo_images"])
    assert len(pngs) == n + 1 and "pseudo_labels_montage.png" in pngs
    for p in pngs:
        _assert_png(out_dir / p)
    # highest score first: the ranks in the file names increase
    ranks = [int(p.split("_rank")[1].split("_")[0]) for p in pngs if "_rank" in p]
    assert ranks == sorted(ranks)


def _fake_round(tiny_voc, round_dir, boxes, complete=True):
    """A round dir written by hand: images of tiny_voc_unlabeled with known pseudo boxes."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    from imagescore_det.data.pseudo import save_pseudo_dataset
    from imagescore_det.engine.round_files import RoundManifest
    from imagescore_det.utils import atomic_write_json, atomic_write_text

    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    scores = -np.arange(len(pool), dtype=float)[::-1]  # the last image is the best
    chosen = list(np.argsort(-scores)[:len(boxes)])
    dicts = []
    for i, box in zip(chosen, boxes):
        d = {k: v for k, v in pool[i].items() if k != "annotations"}
        d["annotations"] = [{"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
                             "score": 0.9}]
        dicts.append(d)
    os.makedirs(round_dir, exist_ok=True)
    save_pseudo_dataset(os.path.join(round_dir, "pseudo_dataset.json"), dicts,
                        {"name": "x_pseudo_r1", "round": 1})
    lines = ["image_id,file_name,score,rank,selected,pseudo_boxes"]
    for rank, i in enumerate(np.argsort(-scores), 1):
        lines.append(f"{pool[i]['image_id']},{pool[i]['file_name']},{float(scores[i])!r},{rank},"
                     f"{int(i in chosen)},{1 if i in chosen else ''}")
    atomic_write_text(os.path.join(round_dir, "scores.csv"), "\n".join(lines) + "\n")
    if complete:
        classes = tiny_voc["meta"]["classes"]
        atomic_write_json(os.path.join(round_dir, "selection.json"), RoundManifest(
            round=1, iteration=1, selector="image_score", dataset_name="x_pseudo_r1",
            fingerprint="0", unlabeled_datasets=["tiny_voc_unlabeled"], thing_classes=classes,
            pool_size=len(pool), num_selected=len(dicts), num_pseudo_images=len(dicts),
            num_dropped=0, num_pseudo_boxes=len(dicts), boxes_per_image=1.0,
            selected_score_mean=0.0, selected_score_min=0.0, pool_score_mean=0.0,
            per_class_boxes={c: 0 for c in classes}, timing={}).to_dict())
    return [pool[i] for i in chosen]


def test_visualize_draws_boxes_where_expected(tiny_voc, tmp_path):
    from imagescore_det.evaluation.visualize import (read_rgb, read_voc_boxes,
                                                     visualize_round, voc_annotation_path)

    box = [10.0, 12.0, 50.0, 44.0]
    chosen = _fake_round(tiny_voc, tmp_path / "round_1", [box] * 3)
    res = visualize_round(str(tmp_path / "round_1"), str(tmp_path / "vis"), num=2,
                          show_truth=True)
    files = sorted(os.listdir(tmp_path / "vis"))
    assert len(files) == 3 and files[-1] == "pseudo_labels_montage.png"
    assert [e["file_name"] for e in res["images"]] == [d["file_name"] for d in chosen[:2]]
    assert [e["rank"] for e in res["images"]] == [1, 2]

    entry = res["images"][0]
    src = read_rgb(entry["file_name"]).astype(int)
    png = _assert_png(entry["path"]).astype(int)
    s = entry["scale"]
    h, w = src.shape[:2]
    assert png.shape[0] > h * s and png.shape[1] == w * s  # a caption strip below the image

    def differs(x, y):  # the drawn pixel vs the (nearest-upscaled) source pixel there
        return np.abs(png[int(y * s), int(x * s)] - src[int(y), min(int(x), w - 1)]).sum() > 60

    y_mid = (box[1] + box[3]) / 2
    assert differs(box[0], y_mid) and differs(box[2], y_mid)  # left and right edges
    # away from every box and label, the image is the source image, upscaled
    truth = read_voc_boxes(voc_annotation_path(entry["file_name"]))
    assert entry["truth_boxes"] == len(truth)
    for _, tb in truth:  # true boxes drawn too
        assert differs(tb[0], (tb[1] + tb[3]) / 2)
    # a pixel inside the pseudo box, far from the edges and labels, is unchanged (the first
    # candidate clear of every true box, the centre first: the check must always run)
    cx, cy = next(((x, y) for y in (32, 30, 34, 36, 38) for x in (30, 20, 40, 16, 44)
                   if all(not (t[0] - 3 <= x <= t[2] + 3 and t[1] - 3 <= y <= t[3] + 3)
                          for _, t in truth)), (None, None))
    assert cx is not None, f"no pixel inside the pseudo box {box} is clear of the truth {truth}"
    assert np.abs(png[int(cy * s) + s // 2, int(cx * s) + s // 2]
                  - src[int(cy), int(cx)]).sum() <= 6


def test_visualize_incomplete_round(tiny_voc, tmp_path):
    from imagescore_det.evaluation.visualize import RoundError, visualize_round

    _fake_round(tiny_voc, tmp_path / "round_1", [[1.0, 1.0, 20.0, 20.0]], complete=False)
    with pytest.raises(RoundError, match="incomplete round: re-run training with --resume"):
        visualize_round(str(tmp_path / "round_1"))
    tool = load_tool("visualize_pseudo_labels")
    with pytest.raises(RoundError, match="not a directory"):
        tool.main(tool.parse_args(["--round-dir", str(tmp_path / "nope")]))
