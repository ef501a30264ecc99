"""The paper's experiment path: GPU-count scaling, equal counts, seeds, resume, early checks."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG, tiny_cfg_opts
from test_selection import SELECT_OPTS, _train

from imagescore_det.engine.round import pseudo_label_in_rank_order


# --------------------------------------------------------------------------- scaling
@pytest.mark.parametrize("refresh", [0, 3000])
def test_round_scales_with_the_schedule(refresh):
    from imagescore_det.engine import Trainer, get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 18000, (6000, 8000)
    cfg.IMAGE_SCORE.START_ITER, cfg.IMAGE_SCORE.REFRESH_PERIOD = 9000, refresh
    for world in (1, 4, 8, 16):
        scaled = Trainer.auto_scale_workers(cfg.clone(), world)
        solver, settings = scaled.SOLVER, scaled.IMAGE_SCORE
        assert solver.IMS_PER_BATCH == 2 * world
        assert settings.START_ITER / solver.MAX_ITER == pytest.approx(0.5, abs=1e-3), world
        if refresh:
            assert settings.REFRESH_PERIOD / solver.MAX_ITER == pytest.approx(1 / 6, abs=1e-3)
        else:
            assert settings.REFRESH_PERIOD == 0
    assert Trainer.auto_scale_workers(cfg, 8) is cfg  # the reference size changes nothing


def test_trainer_checks_the_scaled_config(tiny_cfg):
    """The scaled config is what runs, so it is what the checks see."""
    from imagescore_det.engine import ConfigError, Trainer

    cfg = tiny_cfg(*SELECT_OPTS, "SOLVER.REFERENCE_WORLD_SIZE", "4", "SOLVER.IMS_PER_BATCH", "4")
    cfg.defrost()
    cfg.IMAGE_SCORE.MIN_BOXES_PER_IMAGE = 0  # not allowed with FILTER_EMPTY_ANNOTATIONS
    cfg.freeze()
    with pytest.raises(ConfigError, match="scaled to 1 processes.*FILTER_EMPTY_ANNOTATIONS"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match="IMS_PER_BATCH=4 is not a multiple of "
                                          "SOLVER.REFERENCE_WORLD_SIZE=3"):
        tiny_cfg("SOLVER.REFERENCE_WORLD_SIZE", "3", "SOLVER.IMS_PER_BATCH", "4")


# --------------------------------------------------------------------------- back-fill
def _fake_run(counts, target, backfill, min_boxes=1):
    calls = []

    def predict(indices):
        calls.append(list(indices))
        return [{"n": counts[i]} for i in indices]

    examined, _, kept = pseudo_label_in_rank_order(
        list(range(len(counts))), target, predict, lambda p: p["n"], min_boxes, backfill)
    return examined, kept, calls


def test_backfill_known_answers():
    counts = [2, 0, 1, 0, 0, 3, 1, 5]
    # literal top 3: image 1 is dropped, nothing replaces it
    assert _fake_run(counts, 3, False) == ([0, 1, 2], [2, 0, 1], [[0, 1, 2]])
    # back-fill: images 3 and 4 have no box either; 5 completes the three
    examined, kept, calls = _fake_run(counts, 3, True)
    assert examined == [0, 1, 2, 3, 4, 5] and kept == [2, 0, 1, 0, 0, 3]
    assert calls == [[0, 1, 2], [3], [4], [5]]  # only what is still needed is predicted
    # MIN_BOXES_PER_IMAGE 2: images 0, 5 and 7 qualify
    examined, _, calls = _fake_run(counts, 3, True, min_boxes=2)
    assert examined == list(range(8)) and calls == [[0, 1, 2], [3, 4], [5, 6], [7]]
    # the pool runs out: every image examined once, fewer than the target kept
    examined, kept, _ = _fake_run([0, 1, 0], 3, True)
    assert examined == [0, 1, 2] and sum(k >= 1 for k in kept) == 1
    # MIN_BOXES_PER_IMAGE 0: every image counts, one pass
    assert _fake_run(counts, 3, True, min_boxes=0)[2] == [[0, 1, 2]]


@pytest.fixture(scope="module")
def trained_tiny(tiny_voc, tmp_path_factory):
    """A tiny detector after 2 iterations and a score threshold that leaves about half of
    the pool's images without a box."""
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import Trainer, load_config, selection

    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path_factory.mktemp("t"), max_iter=2))
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.eval()
    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    predictions, _ = selection.predict(cfg, model, pool)
    best = sorted(float(np.max(p["scores"])) for p in predictions)
    thresh = (best[len(best) // 2 - 1] + best[len(best) // 2]) / 2
    return {"cfg": cfg, "model": model, "pool": pool, "thresh": thresh,
            "with_box": sum(b >= thresh for b in best)}


def test_every_selector_trains_on_the_same_number_of_images(trained_tiny):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine.round import compute_round
    from imagescore_det.engine.selectors import Ranking, register_selector, unregister_selector

    @register_selector("pool_order")
    def pool_order(ctx):
        return Ranking(-np.arange(len(ctx.pool), dtype=float))

    pool, k = trained_tiny["pool"], math.ceil(0.3 * len(trained_tiny["pool"]))
    assert trained_tiny["with_box"] >= k  # the pool allows k
    counts = {}
    try:
        for backfill in (True, False):
            for selector in ("image_score", "softmax", "random", "pool_order"):
                cfg = trained_tiny["cfg"].clone()
                cfg.defrost()
                cfg.merge_from_list(SELECT_OPTS + [
                    "IMAGE_SCORE.SELECTOR", selector, "IMAGE_SCORE.BACKFILL", str(backfill),
                    "IMAGE_SCORE.BOX_SCORE_THRESH", str(trained_tiny["thresh"])])
                result = compute_round(cfg, trained_tiny["model"], pool, 1, 2,
                                       lambda: DatasetCatalog.get("tiny_voc_labeled"), seed=7)
                counts[selector, backfill] = (len(result.pseudo), len(result.examined) - k)
                assert len(result.chosen) == k and sum(result.trained) == len(result.pseudo)
    finally:
        unregister_selector("pool_order")
    assert {counts[s, True][0] for s in ("image_score", "softmax", "random", "pool_order")} \
        == {k}, counts
    # without back-fill the counts differ: the drops were real
    assert min(counts[s, False][0] for s in ("image_score", "random", "pool_order")) < k, counts
    assert all(counts[s, False][1] == 0 for s in ("image_score", "random", "pool_order"))


# --------------------------------------------------------------------------- seeds
def test_random_selection_follows_the_run_seed():
    from imagescore_det.engine import get_imagescore_cfg
    from imagescore_det.engine.consistency import run_seed
    from imagescore_det.engine.selectors import SelectorContext, rank_pool

    def scores(seed, cfg=None):
        ctx = SelectorContext(cfg=cfg, model=None, pool=[{}] * 50, labeled=list, seed=seed)
        return rank_pool("random", ctx).scores

    assert not np.array_equal(scores(1), scores(2))
    np.testing.assert_array_equal(scores(3), scores(3))
    # known answer: the stream of seed * 1000 + round (round_index 1 by default)
    np.testing.assert_array_equal(scores(3), np.random.default_rng(3001).random(50))
    cfg = get_imagescore_cfg()
    cfg.SEED, cfg.IMAGE_SCORE.SEED = 5, -1
    assert run_seed(cfg) == 5
    np.testing.assert_array_equal(scores(5, cfg), scores(5))
    cfg.IMAGE_SCORE.SEED = 9  # the random selector's own seed; the run's stays SEED
    assert run_seed(cfg) == 5
    np.testing.assert_array_equal(scores(5, cfg), scores(9))
    cfg.SEED, cfg.IMAGE_SCORE.SEED = -1, -1
    drawn = {run_seed(cfg) for _ in range(5)}
    assert len(drawn) > 1  # not a constant 0 any more
    assert run_seed(cfg, recorded=123) == 123  # a resumed run's recorded draw


class _StartsAt:
    """Stands in for the trainer: where training starts."""

    def __init__(self, start_iter):
        self.start_iter = start_iter


def _seeded_hook(cfg, state=None, start_iter=0):
    """An ImageScoreHook after before_train (with ``state`` loaded from a checkpoint first)."""
    from imagescore_det.engine.hook import ImageScoreHook

    hook = ImageScoreHook(cfg, build_train_loader=None)
    if state is not None:
        hook.load_state_dict(state)
    hook.trainer = _StartsAt(start_iter)
    hook.before_train()
    return hook


def test_seed_drawn_under_seed_minus_1_is_checkpointed_and_reused(tiny_cfg):
    """Issue 19.2: the drawn seed is in the hook's checkpoint state, and a resumed run (state
    loaded before training starts) uses it instead of drawing another."""
    cfg = tiny_cfg(*SELECT_OPTS, "SEED", "-1", "IMAGE_SCORE.START_ITER", "6", max_iter=8)
    first = _seeded_hook(cfg)
    assert first.state_dict() == {"run_seed": first.seed}
    drawn = {_seeded_hook(cfg).seed for _ in range(4)} | {first.seed}
    assert len(drawn) > 1  # a fresh run draws
    resumed = _seeded_hook(cfg, first.state_dict(), start_iter=4)
    assert resumed.seed == first.seed
    assert resumed.state_dict() == {"run_seed": first.seed}  # and saves it again
    # a fixed SEED needs nothing recorded, and a recorded draw does not override it
    fixed = tiny_cfg(*SELECT_OPTS, "SEED", "5", "IMAGE_SCORE.START_ITER", "6", max_iter=8)
    assert _seeded_hook(fixed, {"run_seed": 99}).seed == 5
    assert _seeded_hook(fixed).state_dict() == {}


def test_manifest_records_the_seed_it_used(tiny_cfg):
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.SELECTOR", "random", "SEED", "11", max_iter=3)
    _train(cfg)
    manifest = json.load(open(os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1",
                                           "selection.json")))
    assert manifest["seed"] == 11


# --------------------------------------------------------------------------- resume
def _round_then_checkpoint(tiny_cfg, *extra):
    opts = SELECT_OPTS + ["SOLVER.CHECKPOINT_PERIOD", "3", "IMAGE_SCORE.EVAL_BEFORE", "True",
                          *extra]
    cfg = tiny_cfg(*opts, max_iter=4)
    _train(cfg)
    return cfg, opts


def _point_last_checkpoint(cfg, name):
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"), "w") as f:
        f.write(name)


def test_resume_with_changed_settings_stops_saying_what_changed(tiny_cfg):
    from imagescore_det.engine import Trainer

    cfg, opts = _round_then_checkpoint(tiny_cfg)
    _point_last_checkpoint(cfg, "model_0000002.pth")  # after the round
    changed = tiny_cfg(*opts, "IMAGE_SCORE.TOP_FRACTION", "0.5", "MODEL.ROI_HEADS.NMS_THRESH_TEST",
                       "0.3", max_iter=6)
    trainer = Trainer(changed)
    trainer.resume_or_load(resume=True)
    with pytest.raises(RuntimeError) as e:
        trainer.train()
    msg = str(e.value)
    assert "IMAGE_SCORE.TOP_FRACTION: 0.3 when the round was made, 0.5 now" in msg
    assert "MODEL.ROI_HEADS.NMS_THRESH_TEST: 0.5 when the round was made, 0.3 now" in msg
    assert "round_1" in msg and "delete" in msg and "config.yaml" in msg


def test_resume_at_the_round_keeps_eval_before_and_checks_settings(tiny_cfg):
    """Resumed exactly at the round's iteration with the round on disk: reused, and the
    "before" evaluation is still in report.json; with other settings: stopped."""
    from imagescore_det.engine import Trainer

    opts = SELECT_OPTS + ["SOLVER.CHECKPOINT_PERIOD", "2", "IMAGE_SCORE.EVAL_BEFORE", "True",
                          "IMAGE_SCORE.START_ITER", "2"]
    cfg = tiny_cfg(*opts, max_iter=4)
    _train(cfg)  # model_0000001.pth is saved before the round at iteration 2
    _point_last_checkpoint(cfg, "model_0000001.pth")
    again = tiny_cfg(*opts, max_iter=4)
    trainer = _train(again, resume=True)
    assert trainer.start_iter == 2
    report = json.load(open(os.path.join(cfg.OUTPUT_DIR, "report.json")))
    assert report["eval_before"] and report["rounds"][0]["round"] == 1

    changed = tiny_cfg(*opts, "IMAGE_SCORE.BOX_SCORE_THRESH", "0.25", max_iter=4)
    trainer = Trainer(changed)
    trainer.resume_or_load(resume=True)
    with pytest.raises(RuntimeError, match=r"BOX_SCORE_THRESH: 0\.0 when the round was made, "
                                           r"0\.25 now"):
        trainer.train()


# --------------------------------------------------------------------------- early checks
def test_late_failures_now_stop_before_the_first_iteration(tiny_cfg, tiny_voc):
    from imagescore_det.engine import ConfigError, Trainer

    with pytest.raises(ConfigError, match="'nope_labeled' named in .* is not registered"):
        tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.LABELED_DATASETS", "('nope_labeled',)")
    with pytest.raises(ConfigError, match="START_ITER=4 must be in"):
        tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.START_ITER", "4", max_iter=4)
    with pytest.raises(ConfigError, match="FILTER_EMPTY_ANNOTATIONS False"):
        tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "0")
    tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "0",
             "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False")  # the documented fix works

    # GRID () with images of different sizes: refused before iteration 0 runs
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.GRID", "()")
    seen = []

    class Spy(Trainer):
        def run_step(self):
            seen.append(self.iter)
            super().run_step()

    trainer = Spy(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(ConfigError, match=r"GRID is \(\) but .* different input sizes"):
        trainer.train()
    assert seen == []


def test_min_boxes_zero_trains_empty_images_as_background(tiny_cfg):
    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.MIN_BOXES_PER_IMAGE", "0",
                   "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False",
                   "IMAGE_SCORE.BOX_SCORE_THRESH", "0.99", max_iter=3)
    spy = []
    _train(cfg, spy=spy)
    manifest = json.load(open(os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1",
                                           "selection.json")))
    assert manifest["num_pseudo_images"] == manifest["num_selected"] == 4
    assert manifest["num_background_images"] == 4 and manifest["num_pseudo_boxes"] == 0
    assert spy[-1] == ("tiny_voc_labeled", manifest["dataset_name"])


# --------------------------------------------------------------------------- distributed
_SEPARATE_DIRS = r'''
import os, sys
sys.path.insert(0, {tools!r})
import train_net
from detectron2.utils import comm

_setup = train_net.setup


def setup(args):  # every rank gets its own OUTPUT_DIR, as on machines without a shared disk
    args.opts = list(args.opts) + ["OUTPUT_DIR", os.path.join({base!r}, f"rank{{comm.get_rank()}}")]
    return _setup(args)


train_net.setup = setup
if __name__ == "__main__":
    args = train_net.default_argument_parser().parse_args()
    train_net.launch(train_net.worker, args.num_gpus, dist_url="auto", args=(args,))
'''


def test_ranks_with_separate_output_dirs_resume_to_the_same_selection(tmp_path):
    from imagescore_det.data import generate_synthetic_voc

    root = tmp_path / "d2root"
    generate_synthetic_voc(str(root / "synthetic_voc"), seed=3, num_labeled=10,
                           num_unlabeled=12, num_test=6, min_size=72, max_size=96,
                           min_obj_size=16, max_obj_size=36, max_objects=3)
    base = tmp_path / "out"
    script = tmp_path / "separate_dirs.py"
    script.write_text(_SEPARATE_DIRS.format(tools=os.path.join(REPO, "tools"), base=str(base)))

    def run(max_iter, resume):
        opts = tiny_cfg_opts(base / "unused", max_iter=max_iter)
        opts[1], opts[3] = "('synthetic_voc_labeled',)", "('synthetic_voc_test',)"
        opts += ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
                 "('synthetic_voc_unlabeled',)", "IMAGE_SCORE.START_ITER", "1",
                 "IMAGE_SCORE.GRID", "(4, 4)", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
                 "IMAGE_SCORE.EVAL_BEFORE", "False", "TEST.EVAL_PERIOD", "0",
                 "SOLVER.CHECKPOINT_PERIOD", "2"]
        cmd = [sys.executable, str(script), "--config-file", TINY_CONFIG, "--num-gpus", "2",
               *(["--resume"] if resume else []), *opts]
        env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(max_iter=3, resume=False)
    rank0, rank1 = base / "rank0", base / "rank1"
    assert (rank0 / "image_score" / "round_1" / "selection.json").is_file()
    assert not (rank1 / "image_score").exists()  # only rank 0 writes the round
    # the checkpoints reach rank 1's machine (as a user would copy them); the round does not
    shutil.copy(rank0 / "model_0000001.pth", rank1 / "model_0000001.pth")
    for out in (rank0, rank1):
        (out / "last_checkpoint").write_text("model_0000001.pth")
    run(max_iter=4, resume=True)
    pseudo = json.load(open(rank0 / "image_score" / "round_1" / "pseudo_dataset.json"))
    expected = f"({len(pseudo['dataset_dicts'])} pseudo-labeled images)"
    for log in (rank0 / "log.txt", rank1 / "log.txt.rank1"):
        text = log.read_text()
        resumed = text[text.rindex("Resumed after selection round 1"):]
        assert expected in resumed, log


# --------------------------------------------------------------------------- class-agnostic NMS
def test_class_agnostic_nms_known_answer():
    from imagescore_det.data.pseudo import class_agnostic_nms

    prediction = {"boxes": np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30],
                                     [0, 0, 10, 9]], dtype=float),
                  "scores": np.array([0.9, 0.8, 0.7, 0.95]), "classes": np.array([0, 1, 1, 2])}
    # IoU(box0, box1) = 81/100, IoU(box3, box0) = 90/100, IoU(box3, box1) = 72/91 = 0.79
    kept = class_agnostic_nms(prediction, 0.85)
    assert kept["scores"].tolist() == [0.95, 0.8, 0.7]  # box0 goes under box3 (0.90 > 0.85)
    assert kept["classes"].tolist() == [2, 1, 1]
    kept = class_agnostic_nms(prediction, 0.5)
    assert kept["scores"].tolist() == [0.95, 0.7] and kept["classes"].tolist() == [2, 1]
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    assert class_agnostic_nms(empty, 0.5) is empty


def test_round_applies_class_agnostic_nms_and_compares_both(trained_tiny):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine.round import compute_round

    pseudo = {}
    for agnostic in (False, True):
        cfg = trained_tiny["cfg"].clone()
        cfg.defrost()
        cfg.merge_from_list(SELECT_OPTS + [
            "IMAGE_SCORE.SELECTOR", "softmax", "IMAGE_SCORE.ANALYZE_POOL", "True",
            "IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS", str(agnostic),
            "IMAGE_SCORE.PSEUDO_NMS_THRESH", "0.3"])
        result = compute_round(cfg, trained_tiny["model"], trained_tiny["pool"], 1, 2,
                               lambda: DatasetCatalog.get("tiny_voc_labeled"))
        pseudo[agnostic] = sum(len(d["annotations"]) for d in result.pseudo)
        by_nms = result.pool_analysis["pool_precision_by_nms"]
        assert by_nms["class_agnostic"]["boxes"] < by_nms["per_class"]["boxes"]
    assert pseudo[True] < pseudo[False]
