"""Selection, pseudo-labeling, registration, loader switch and resume (issue 4)."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_CONFIG, tiny_cfg_opts

from imagescore_det.engine import round_files, selection


# --------------------------------------------------------------------------- pure parts
def test_select_top_known_answers():
    scores = np.array([-3.0, -1.0, -2.0, -1.0, -5.0])
    # ceil(0.4 * 5) = 2: the two -1.0 (a tie broken by pool order), best first
    assert selection.select_top(scores, 0.4).tolist() == [1, 3]
    assert selection.select_top(scores, 1.0).tolist() == [1, 3, 2, 0, 4]
    assert selection.select_top(scores, 0.01).tolist() == [1]  # at least one image
    assert len(selection.select_top(np.zeros(10), 0.3)) == 3  # ceil(3.0) must not become 4
    with pytest.raises(ValueError, match="empty"):
        selection.select_top(np.array([]), 0.3)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="TOP_FRACTION"):
            selection.select_top(scores, bad)


def test_select_top_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        scores = rng.integers(-4, 1, size=n).astype(float)  # many ties
        frac = float(rng.uniform(0.01, 1.0))
        k = max(1, math.ceil(frac * n - 1e-9))
        ref = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
        assert selection.select_top(scores, frac).tolist() == ref


def test_softmax_confidence_known_answer():
    preds = [{"scores": [0.9, 0.7, 0.2]}, {"scores": [0.4]}, {"scores": []},
             {"scores": [0.6, 0.55]}]
    conf = selection.softmax_confidence(preds, 0.5)
    np.testing.assert_allclose(conf, [0.8, 0.4 - 1.0, -1.0, 0.575])
    # images with kept boxes rank above those without
    assert selection.select_top(conf, 0.5).tolist() == [0, 3]


def test_random_scores_are_seeded():
    a, b = selection.random_scores(20, 5), selection.random_scores(20, 5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, selection.random_scores(20, 6))


# --------------------------------------------------------------------------- glue vs core
def test_image_scores_equal_direct_scorer_use(tiny_cfg, tiny_voc):
    """The sharded/gathered runner gives, in pool order, what ImageScorer gives directly."""
    from detectron2.data import DatasetCatalog, DatasetMapper

    from imagescore_det.engine import Trainer
    from imagescore_det.scoring import ImageBatch, ImageScorer

    cfg = tiny_cfg("IMAGE_SCORE.BATCH_SIZE", "3", "IMAGE_SCORE.GRID", "(4, 4)")
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    labeled = DatasetCatalog.get(tiny_voc["names"]["labeled"])
    pool = DatasetCatalog.get(tiny_voc["names"]["unlabeled"])
    scores, scorer, _ = selection.image_scores(cfg, model, labeled, pool)
    assert scores.shape == (len(pool),) and np.all(scores <= 0)

    mapper = DatasetMapper(cfg, is_train=False)
    # BATCH_SIZE > 1 batches images in order of their test-time size (engine/batching.py)
    from imagescore_det.engine.batching import size_order

    labeled = [labeled[i] for i in size_order(cfg, labeled)]
    pool_order = size_order(cfg, pool)
    scores = scores[pool_order]
    pool = [pool[i] for i in pool_order]

    def batches(dicts, bs):
        for i in range(0, len(dicts), bs):
            chunk = [mapper(d) for d in dicts[i:i + bs]]
            im = model.preprocess_image(chunk)
            yield ImageBatch(inputs=im.tensor, valid_sizes=[tuple(s) for s in im.image_sizes])

    ref = ImageScorer(model.backbone, layers=r"conv\d_\d", grid=(4, 4))
    ref.fit(batches(labeled, 3))
    np.testing.assert_allclose(scores, ref.score(batches(pool, 3)).numpy(), rtol=0, atol=1e-12)
    assert scorer.layer_names == ref.layer_names
    assert len(ref.layer_names) == 13  # every VGG16 conv block


# --------------------------------------------------------------------------- the hook
def _train(cfg, resume=False, spy=None):
    from imagescore_det.engine import Trainer

    class SpyTrainer(Trainer):
        @classmethod
        def build_train_loader(cls, c):
            if spy is not None:
                spy.append(tuple(c.DATASETS.TRAIN))
            return super().build_train_loader(c)

    t = SpyTrainer(cfg)
    t.resume_or_load(resume=resume)
    t.train()
    return t


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


SELECT_OPTS = ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
               "('tiny_voc_unlabeled',)", "IMAGE_SCORE.START_ITER", "2",
               "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0", "IMAGE_SCORE.GRID", "(4, 4)",
               "IMAGE_SCORE.EVAL_BEFORE", "False"]


PREDICTING_SELECTORS = ("softmax", "hybrid", "image_score_per_class")  # infer the whole pool


@pytest.mark.parametrize("selector", ["image_score", "softmax", "random", "hybrid",
                                      "image_score_per_class"])
def test_selector_round(selector, tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    from imagescore_det.data.pseudo import load_pseudo_dataset

    # softmax: its pseudo-labels go through the class-agnostic NMS too, so the whole-pool
    # analysis below must judge the NMS'd boxes, as the selected ones are
    agnostic = ["IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS", "True"] if selector == "softmax" else []
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.SELECTOR", selector,
                   "IMAGE_SCORE.ANALYZE_POOL", "True", *agnostic)
    spy = []
    _train(cfg, spy=spy)
    rd = os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1")
    manifest = json.load(open(os.path.join(rd, "selection.json")))
    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    k = math.ceil(0.3 * len(pool))
    assert manifest["pool_size"] == len(pool) and manifest["num_selected"] == k
    assert manifest["iteration"] == 2 and manifest["selector"] == selector

    rows = _read_csv(os.path.join(rd, "scores.csv"))
    assert [r["image_id"] for r in rows] == [str(d["image_id"]) for d in pool]
    scores = np.array([float(r["score"]) for r in rows])
    chosen = {r["file_name"] for r in rows if r["selected"] == "1"}
    # the selected rows are exactly the top-k of the written scores (ties by pool order),
    # ranked here by brute force, not by the select_top under test
    top = sorted(range(len(pool)), key=lambda i: (-float(scores[i]), i))[:k]
    assert chosen == {pool[i]["file_name"] for i in top}
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, len(pool) + 1))
    if selector == "image_score":
        assert np.all(scores <= 0)
    if selector in ("image_score", "hybrid", "image_score_per_class"):
        assert os.path.isfile(os.path.join(rd, "mask.pt"))
    if selector == "random":
        np.testing.assert_array_equal(scores, selection.random_scores(len(pool), 7 * 1000 + 1))

    # the registered dataset is the saved pseudo dataset: selected images, predicted boxes
    name = manifest["dataset_name"]
    assert name == "tiny_voc_unlabeled_pseudo_r1"
    registered = DatasetCatalog.get(name)
    saved, _ = load_pseudo_dataset(os.path.join(rd, "pseudo_dataset.json"))
    assert registered == saved and len(registered) == manifest["num_pseudo_images"]
    trained = {r["file_name"] for r in rows if r["trained"] == "1"}
    assert {d["file_name"] for d in registered} == trained
    assert manifest["num_pseudo_images"] == k  # back-fill: as many as selected
    backfilled = {r["file_name"] for r in rows if r["backfilled"] == "1"}
    assert len(backfilled) == manifest["num_backfilled"] == manifest["num_dropped"]
    assert trained <= chosen | backfilled
    for d in registered:
        assert d["annotations"] and all("score" in a for a in d["annotations"])
        assert all(0 <= a["category_id"] < 4 for a in d["annotations"])
    # true labels never leak in: boxes are predictions, not the pool's annotations
    truth = {d["file_name"]: d["annotations"] for d in pool}
    for d in registered:
        assert [a["bbox"] for a in d["annotations"]] != [a["bbox"] for a in truth[d["file_name"]]]

    # the loader was rebuilt on labeled + pseudo
    assert spy[0] == ("tiny_voc_labeled",)
    assert spy[-1] == ("tiny_voc_labeled", name)
    # statistics went to EventStorage -> metrics.json
    metrics = [json.loads(line) for line in open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
    logged = [m for m in metrics if "image_score/num_selected" in m]
    assert logged and logged[0]["image_score/num_selected"] == k
    assert "image_score/pseudo_precision" in logged[0]
    report = json.load(open(os.path.join(cfg.OUTPUT_DIR, "report.json")))
    assert report["rounds"][0]["dataset_name"] == name and report["eval_after"]
    assert manifest["plots"] == ["score_histogram.png", "precision_by_score_bin.png",
                                 "pool_precision_by_score_bin.png"]
    # whole-pool analysis: deciles cover the pool; one image per pass means the pool-wide
    # predictions of the selected images are exactly the ones pseudo-labeled
    bins = manifest["pool_precision_by_score_bin"]
    assert sum(b["images"] for b in bins) == len(pool)
    assert manifest["pool_precision_selected"] == manifest["pseudo_precision"]
    # ... and scores.csv keeps them per image: every pool image's would-be pseudo-labels
    # against its truth, the same as the quality columns where it was pseudo-labeled
    pool_cols = [[int(r[f"pool_{c}"]) for c in ("true_positives", "false_positives",
                                                 "true_boxes")] for r in rows]
    assert [c[2] for c in pool_cols] == [len(d["annotations"]) for d in pool]
    for r, c in zip(rows, pool_cols):
        if r["trained"] == "1":
            assert c == [int(r["true_positives"]), int(r["false_positives"]),
                         int(r["true_boxes"])]
    # ... and pool_boxes.csv per box: the same boxes, each judged (counts add up per image)
    boxes = round_files.read_pool_boxes_csv(os.path.join(rd, round_files.POOL_BOXES_CSV))
    per_image = [[b["correct"] for b in boxes if b["pool_index"] == i] for i in range(len(pool))]
    assert [[sum(f), len(f) - sum(f)] for f in per_image] == [c[:2] for c in pool_cols]
    assert [b["image_id"] for b in boxes] == [rows[b["pool_index"]]["image_id"] for b in boxes]
    for key, keep in (("pool_precision_all", lambda r: True),
                      ("pool_precision_selected", lambda r: r["trained"] == "1"),
                      ("pool_precision_rest", lambda r: r["trained"] != "1")):
        tp = sum(c[0] for r, c in zip(rows, pool_cols) if keep(r))
        fp = sum(c[1] for r, c in zip(rows, pool_cols) if keep(r))
        assert manifest[key] == (tp / (tp + fp) if tp + fp else None), key
    timing = dict(manifest["timing"])
    # softmax, hybrid and image_score_per_class already have every pool prediction: they
    # pseudo-label from it (no second pass); the others pay an analysis-only pass, which is
    # not part of the selection's cost
    assert ("analysis_inference_pool_s" in timing) == (selector not in PREDICTING_SELECTORS)
    assert (timing["pseudo_label_s"] == 0.0) == (selector in PREDICTING_SELECTORS)
    timing.pop("analysis_inference_pool_s", None)
    total = timing.pop("selection_total_s")
    assert total == pytest.approx(sum(timing.values()))
    for png in manifest["plots"]:
        with open(os.path.join(rd, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # synthetic pool: the split across typical/shifted domains is recorded
    doms = manifest["domains"]
    assert sum(v["pool"] for v in doms.values()) == len(pool)
    assert sum(v["selected"] for v in doms.values()) == k


def test_refresh_rounds_replace_the_pseudo_dataset(tiny_cfg):
    spy = []
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.START_ITER", "1", "IMAGE_SCORE.REFRESH_PERIOD",
                   "2", "IMAGE_SCORE.SELECTOR", "random", max_iter=5)
    _train(cfg, spy=spy)
    rounds = sorted(os.listdir(os.path.join(cfg.OUTPUT_DIR, "image_score")))
    assert [r for r in rounds if r.startswith("round_")] == ["round_1", "round_2"]
    assert spy[-1] == ("tiny_voc_labeled", "tiny_voc_unlabeled_pseudo_r2")


def test_resume_after_switch_reloads_without_rescoring(tiny_cfg, caplog):
    opts = SELECT_OPTS + ["SOLVER.CHECKPOINT_PERIOD", "3"]
    cfg = tiny_cfg(*opts, max_iter=4)
    _train(cfg)
    manifest_path = os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1", "selection.json")
    before = os.stat(manifest_path).st_mtime_ns
    # model_0000002.pth was written after the switch; resume from it with a longer schedule
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    from detectron2.data import DatasetCatalog

    DatasetCatalog.remove("tiny_voc_unlabeled_pseudo_r1")  # as in a new process
    spy = []
    cfg2 = tiny_cfg(*opts, max_iter=6)
    t = _train(cfg2, resume=True, spy=spy)
    assert t.start_iter == 3
    assert os.stat(manifest_path).st_mtime_ns == before  # not recomputed
    assert "tiny_voc_unlabeled_pseudo_r1" in DatasetCatalog.list()
    assert spy[-1] == ("tiny_voc_labeled", "tiny_voc_unlabeled_pseudo_r1")
    report = json.load(open(os.path.join(cfg2.OUTPUT_DIR, "report.json")))
    assert [r["round"] for r in report["rounds"]] == [1]


def test_run_killed_during_scoring_recomputes_the_round(tiny_cfg):
    # train to just before the round; leave a half-written round behind, as a kill would
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.ENABLED", "False", max_iter=2)
    _train(cfg)
    rd = os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1")
    os.makedirs(rd, exist_ok=True)
    with open(os.path.join(rd, "scores.csv"), "w") as f:
        f.write("image_id,score\n000\n")  # truncated
    cfg2 = tiny_cfg(*SELECT_OPTS, max_iter=4)
    _train(cfg2, resume=True)
    manifest = json.load(open(os.path.join(rd, "selection.json")))
    rows = _read_csv(os.path.join(rd, "scores.csv"))
    assert len(rows) == manifest["pool_size"] == 12


def test_resume_with_missing_round_files_fails_clearly(tiny_cfg):
    opts = SELECT_OPTS + ["SOLVER.CHECKPOINT_PERIOD", "3"]
    cfg = tiny_cfg(*opts)
    _train(cfg)
    os.remove(os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1", "selection.json"))
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    from imagescore_det.engine import Trainer

    t = Trainer(tiny_cfg(*opts, max_iter=6))
    t.resume_or_load(resume=True)
    with pytest.raises(RuntimeError, match="selection.json is missing"):
        t.train()


# --------------------------------------------------------------------------- bad input
def test_bad_input_fails_before_training(tiny_cfg, tiny_voc, tmp_path):
    from imagescore_det.data import SYNTHETIC_CLASSES, register_voc
    from imagescore_det.engine import ConfigError, Trainer

    with pytest.raises(ConfigError, match="not registered"):
        tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.UNLABELED_DATASETS", "('no_such_pool',)")
    for bad in ("0.0", "1.5"):
        with pytest.raises(ConfigError, match="TOP_FRACTION"):
            tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.TOP_FRACTION", bad)
    with pytest.raises(ConfigError, match="SELECTOR"):
        tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.SELECTOR", "entropy")
    # an empty pool: a split file with no ids, caught at before_train
    voc = tiny_voc["dirname"]
    with open(os.path.join(voc, "ImageSets", "Main", "empty.txt"), "w"):
        pass
    register_voc("tiny_voc_empty", voc, "empty", 2007, SYNTHETIC_CLASSES)
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_empty',)")
    t = Trainer(cfg)
    t.resume_or_load(resume=False)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        t.train()
    assert "empty" in str(e.value)
    assert t.iter == 0  # no training step was spent


def test_checkpoint_of_another_model_is_refused(tiny_cfg, tmp_path):
    from imagescore_det.engine import CheckpointMismatchError, Trainer

    other = tiny_cfg("MODEL.VGG.WIDTH_MULT", "0.125")
    path = str(tmp_path / "other.pth")
    torch.save({"model": Trainer.build_model(other).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match="other.pth"):
        Trainer(tiny_cfg("MODEL.WEIGHTS", path)).resume_or_load(resume=False)
    foreign = str(tmp_path / "foreign.pth")
    torch.save({"model": {"layer.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(CheckpointMismatchError, match="none of its tensors"):
        Trainer(tiny_cfg("MODEL.WEIGHTS", foreign)).resume_or_load(resume=False)


# --------------------------------------------------------------------------- distributed
@pytest.fixture(scope="module")
def tiny_synthetic_root(tmp_path_factory):
    from imagescore_det.data import generate_synthetic_voc

    root = tmp_path_factory.mktemp("d2root")
    generate_synthetic_voc(str(root / "synthetic_voc"), seed=3, num_labeled=10,
                           num_unlabeled=12, num_test=6, min_size=72, max_size=96,
                           min_obj_size=16, max_obj_size=36, max_objects=3)
    return str(root)


def _train_net(root, out, num_gpus, extra=()):
    opts = tiny_cfg_opts(out, max_iter=1)
    opts[1], opts[3] = "('synthetic_voc_labeled',)", "('synthetic_voc_test',)"
    opts += ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
             "('synthetic_voc_unlabeled',)", "IMAGE_SCORE.START_ITER", "0",
             "IMAGE_SCORE.GRID", "(4, 4)", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
             "IMAGE_SCORE.EVAL_BEFORE", "False", "TEST.EVAL_PERIOD", "0", *extra]
    env = dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
           TINY_CONFIG, "--num-gpus", str(num_gpus), "--dist-url", "auto", *opts]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _digests(out):
    found = {}
    for name in os.listdir(out):
        if name.startswith("log.txt"):
            for line in open(os.path.join(out, name)):
                if "selection digest" in line:
                    found[name] = line.rsplit(" ", 1)[-1].strip()
    return found


def test_two_processes_select_what_one_does(tiny_synthetic_root, tmp_path):
    """gloo, 2 CPU processes: mask statistics all-reduced, pool sharded, same selection.

    With IMAGE_SCORE.BATCH_SIZE 1 (the default) no image is padded to a batch-mate's size,
    so the sharding cannot change any activation and the scores agree to rounding.
    """
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _train_net(tiny_synthetic_root, one, 1)
    _train_net(tiny_synthetic_root, two, 2)
    d1, d2 = _digests(one), _digests(two)
    assert set(d2) == {"log.txt", "log.txt.rank1"}  # both ranks selected...
    assert len(set(d2.values())) == 1  # ...the same images
    assert d2["log.txt"] == d1["log.txt"]  # as one process does
    r1 = _read_csv(os.path.join(one, "image_score", "round_1", "scores.csv"))
    r2 = _read_csv(os.path.join(two, "image_score", "round_1", "scores.csv"))
    np.testing.assert_allclose([float(r["score"]) for r in r2],
                               [float(r["score"]) for r in r1], rtol=0, atol=1e-9)
    assert [r["selected"] for r in r2] == [r["selected"] for r in r1]
    p1 = json.load(open(os.path.join(one, "image_score", "round_1", "pseudo_dataset.json")))
    p2 = json.load(open(os.path.join(two, "image_score", "round_1", "pseudo_dataset.json")))
    assert [d["file_name"] for d in p2["dataset_dicts"]] == \
        [d["file_name"] for d in p1["dataset_dicts"]]


def test_shard_sizes_match_detectron2_inference_sampler():
    from detectron2.data.samplers import InferenceSampler

    for n in range(0, 12):
        for world in range(1, 5):
            ref = [len(InferenceSampler._get_local_indices(n, world, r)) for r in range(world)]
            assert [selection._shard_size(n, r, world) for r in range(world)] == ref


def test_a_round_leaves_the_global_rngs_as_it_found_them(tiny_cfg):
    """Runs that differ only in SELECTOR must share the post-round random stream."""
    import random

    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine.hook import preserved_rng

    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with preserved_rng():
        random.random(), np.random.rand(), torch.rand(3)
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])
    # and the hook uses it: a round with an analysis pass and evaluation (which create
    # loaders) leaves torch's RNG where a round without them leaves it
    states = []
    for extra in (["IMAGE_SCORE.ANALYZE_POOL", "False", "IMAGE_SCORE.EVAL_BEFORE", "False"],
                  ["IMAGE_SCORE.ANALYZE_POOL", "True", "IMAGE_SCORE.EVAL_BEFORE", "True"]):
        cfg = tiny_cfg(*SELECT_OPTS, *extra, "DATALOADER.NUM_WORKERS", "1", max_iter=3)
        seed_all_rng(cfg.SEED)  # as default_setup does in tools/train_net.py
        _train(cfg)
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])
