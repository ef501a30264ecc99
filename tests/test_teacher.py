"""The online teacher-student mode (imagescore_det/teacher, issue 17): known answers for the
EMA, the strong view, the threshold, the zero-box loss, the keep-rate scaling, the config
errors, the teacher/student checkpoints and one tools/train_net.py run."""
import json
import os

import pytest
import torch

from detectron2.structures import Boxes, Instances

from conftest import TINY_CONFIG

TEACHER_OPTS = ["TEACHER.ENABLED", "True", "TEACHER.BURN_IN_ITER", "2",
                "TEACHER.EMA_KEEP_RATE", "0.5", "TEACHER.SCORE_THRESH", "0.0",
                "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_unlabeled',)",
                "SOLVER.CHECKPOINT_PERIOD", "2"]


# ------------------------------------------------------------------------------ EMA
def test_ema_update_exact_values():
    from imagescore_det.teacher.ema import copy_into, ema_update, make_teacher

    student = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        student[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        student[0].bias.fill_(-4.0)
    teacher = make_teacher(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        student[0].weight.copy_(torch.tensor([[3.0, 6.0]]))
        student[0].bias.fill_(4.0)
        student[1].running_mean.fill_(8.0)
        student[1].num_batches_tracked.fill_(5)
    ema_update(teacher, student, 0.75)
    assert teacher[0].weight.tolist() == [[1.5, 3.0]]  # 0.75 * [1, 2] + 0.25 * [3, 6]
    assert teacher[0].bias.tolist() == [-2.0]          # 0.75 * -4 + 0.25 * 4
    assert teacher[1].running_mean.tolist() == [2.0]   # float buffers follow the EMA too
    assert int(teacher[1].num_batches_tracked) == 5    # integer buffers are copied
    assert student[0].weight.tolist() == [[3.0, 6.0]]  # the student is untouched
    copy_into(teacher, student)
    assert teacher[0].weight.tolist() == [[3.0, 6.0]]


def test_keep_rate_scaling_keeps_the_time_constant_in_images(tiny_cfg):
    from imagescore_det.engine.trainer import Trainer

    cfg = tiny_cfg(*TEACHER_OPTS, "SOLVER.REFERENCE_WORLD_SIZE", "2", "TEACHER.REFRESH", "40",
                   "TEACHER.BURN_IN_ITER", "100", "TEACHER.EMA_KEEP_RATE", "0.99", max_iter=400)
    scaled = Trainer.auto_scale_workers(cfg, 4)  # twice the images a step
    assert scaled.SOLVER.IMS_PER_BATCH == 4 and scaled.SOLVER.MAX_ITER == 200
    assert scaled.TEACHER.BURN_IN_ITER == 50 and scaled.TEACHER.REFRESH == 20
    assert scaled.TEACHER.EMA_KEEP_RATE == pytest.approx(0.9801, abs=1e-12)  # 0.99 ** 2
    # the weight of the student of 1000 images ago is the same at both batches
    k, k2 = cfg.TEACHER.EMA_KEEP_RATE, scaled.TEACHER.EMA_KEEP_RATE
    assert k2 ** (1000 / 4) == pytest.approx(k ** (1000 / 2), rel=1e-9)
    assert Trainer.auto_scale_workers(cfg, 2) is cfg  # the reference size: nothing changes


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("opts, key, fix", [
    (["TEACHER.EMA_KEEP_RATE", "1.0"], "TEACHER.EMA_KEEP_RATE", "in (0, 1)"),
    (["TEACHER.EMA_KEEP_RATE", "0.0"], "TEACHER.EMA_KEEP_RATE", "in (0, 1)"),
    (["TEACHER.SCORE_THRESH", "1.5"], "TEACHER.SCORE_THRESH", "in [0, 1]"),
    (["TEACHER.SCORE_THRESH", "-0.1"], "TEACHER.SCORE_THRESH", "in [0, 1]"),
    (["TEACHER.UNLABELED_PER_LABELED", "0.0"], "TEACHER.UNLABELED_PER_LABELED", "> 0"),
    (["TEACHER.TOP_FRACTION", "0.0"], "TEACHER.TOP_FRACTION", "(0, 1]"),
    (["TEACHER.SELECTOR", "imagescore"], "TEACHER.SELECTOR", "image_score"),
    (["TEACHER.FOCAL_GAMMA", "-1.0"], "TEACHER.FOCAL_GAMMA", "use 0.0"),
    (["TEACHER.BURN_IN_ITER", "4"], "TEACHER.BURN_IN_ITER", "[0, SOLVER.MAX_ITER=4)"),
    (["IMAGE_SCORE.UNLABELED_DATASETS", "()"], "IMAGE_SCORE.UNLABELED_DATASETS",
     "name the registered"),
    (["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.START_ITER", "2"], "IMAGE_SCORE.ENABLED",
     "Turn one of them off"),
    (["TEACHER.PAIRED_BASELINE", "True", "TEACHER.SUPERVISED_ONLY", "True"],
     "TEACHER.SUPERVISED_ONLY", "Turn TEACHER.SUPERVISED_ONLY off"),
    (["TEACHER.PAIRED_BASELINE", "True", "TEACHER.BURN_IN_ITER", "0"], "TEACHER.BURN_IN_ITER",
     "at least 1 iteration"),
    (["TEACHER.TARGETS", "gt"], "TEACHER.TARGETS", "or \"truth\""),
    (["TEACHER.NUM_REFRESHES", "-1"], "TEACHER.NUM_REFRESHES", "N > 0 (at most N)"),
])
def test_bad_teacher_config_is_refused_naming_key_and_fix(tiny_cfg, opts, key, fix):
    from imagescore_det.engine import ConfigError

    tiny_cfg(*TEACHER_OPTS)  # the base of every case loads
    with pytest.raises(ConfigError) as err:
        tiny_cfg(*TEACHER_OPTS, *opts)
    assert key in str(err.value) and fix in str(err.value)


def test_a_pool_without_images_stops_before_training(tiny_cfg):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from imagescore_det.data import SYNTHETIC_CLASSES
    from imagescore_det.engine import ConfigError
    from imagescore_det.teacher.trainer import TeacherTrainer

    if "tiny_voc_empty_pool" not in DatasetCatalog.list():
        DatasetCatalog.register("tiny_voc_empty_pool", lambda: [])
        MetadataCatalog.get("tiny_voc_empty_pool").set(thing_classes=list(SYNTHETIC_CLASSES))
    cfg = tiny_cfg(*TEACHER_OPTS, "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_empty_pool',)")
    with pytest.raises(ConfigError, match=r"IMAGE_SCORE.UNLABELED_DATASETS=\('tiny_voc_empty_pool"
                                          r"',\) has no images.*Check the datasets' split"):
        TeacherTrainer(cfg)


# ------------------------------------------------------------------------------ targets
def _prediction(scores, size=(40, 50)):
    pred = Instances(size)
    n = len(scores)
    pred.pred_boxes = Boxes(torch.tensor([[i, i, 10.0 + i, 12.0 + i] for i in range(n)]))
    pred.scores = torch.tensor(scores)
    pred.pred_classes = torch.arange(n) % 4
    return pred


def test_threshold_drops_boxes_below_it():
    from imagescore_det.teacher.targets import pseudo_targets

    [target] = pseudo_targets([_prediction([0.69, 0.7, 0.95, 0.1])], 0.7)
    assert target.image_size == (40, 50)
    assert target.gt_boxes.tensor.tolist() == [[1.0, 1.0, 11.0, 13.0], [2.0, 2.0, 12.0, 14.0]]
    assert target.gt_classes.tolist() == [1, 2]
    [none] = pseudo_targets([_prediction([0.69, 0.5])], 0.7)
    assert len(none) == 0


def test_unsupervised_losses_switched_on():
    from imagescore_det.teacher.targets import unsup_loss_names

    assert unsup_loss_names(False) == ("loss_rpn_cls", "loss_cls")
    assert unsup_loss_names(True) == ("loss_rpn_cls", "loss_cls", "loss_rpn_loc", "loss_box_reg")


@pytest.fixture
def tiny_model(tiny_cfg):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    return model


def _views(n, size=(80, 96)):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8),
             "height": size[0], "width": size[1]} for _ in range(n)]


def test_no_box_above_threshold_gives_exactly_zero_loss(tiny_model):
    from imagescore_det.teacher.targets import pseudo_targets, unsupervised_loss

    views = _views(2)
    targets = pseudo_targets([_prediction([0.5, 0.6], (80, 96)), _prediction([], (80, 96))], 0.7)
    loss, parts = unsupervised_loss(tiny_model, views, targets, ("loss_rpn_cls", "loss_cls"), 2.0)
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    loss.backward()
    grads = [p.grad for p in tiny_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.all(g == 0) for g in grads)


def test_images_without_a_box_are_left_out_of_the_loss(tiny_model):
    """A batch of one image with boxes and one without = the loss of the first alone."""
    from imagescore_det.teacher.targets import pseudo_targets, unsupervised_loss

    views = _views(2)
    names = ("loss_rpn_cls", "loss_cls")
    targets = pseudo_targets([_prediction([0.9, 0.8], (80, 96)), _prediction([0.2], (80, 96))],
                             0.7)
    from detectron2.utils.events import EventStorage

    with EventStorage():
        torch.manual_seed(5)
        both, _ = unsupervised_loss(tiny_model, views, targets, names, 2.0)
        torch.manual_seed(5)
        alone = tiny_model([dict(views[0], instances=targets[0])])
    assert torch.isfinite(both) and both.item() > 0
    assert both.item() == pytest.approx(2.0 * (alone["loss_rpn_cls"] + alone["loss_cls"]).item(),
                                        rel=1e-6)


# ------------------------------------------------------------------------------ focal loss
def test_focal_cross_entropy_known_values():
    import math

    from imagescore_det.teacher.focal import focal_cross_entropy

    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    targets = torch.tensor([1, 1])  # p_t = 0.75 and 0.25
    ce = torch.tensor([-math.log(0.75), -math.log(0.25)])
    expected = (0.25 ** 2 * ce[0] + 0.75 ** 2 * ce[1]) / 2
    assert focal_cross_entropy(logits, targets, 2.0).item() == pytest.approx(expected.item(),
                                                                            rel=1e-6)
    assert focal_cross_entropy(logits, targets, 0.0).item() == pytest.approx(ce.mean().item(),
                                                                            rel=1e-6)
    assert focal_cross_entropy(logits[:0], targets[:0], 2.0).item() == 0.0


def test_teacher_trainer_model_uses_focal_loss_when_configured(tiny_cfg):
    from imagescore_det.teacher.focal import FocalFastRCNNOutputLayers, focal_cross_entropy
    from imagescore_det.teacher.trainer import TeacherTrainer

    assert type(TeacherTrainer.build_model(tiny_cfg(*TEACHER_OPTS)).roi_heads.box_predictor) \
        is not FocalFastRCNNOutputLayers  # 0.0: off
    model = TeacherTrainer.build_model(tiny_cfg(*TEACHER_OPTS, "TEACHER.FOCAL_GAMMA", "1.5"))
    predictor = model.roi_heads.box_predictor
    assert isinstance(predictor, FocalFastRCNNOutputLayers) and predictor.focal_gamma == 1.5
    scores = torch.tensor([[2.0, 0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    proposals = Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 9, 9]] * 2)),
                          gt_boxes=Boxes(torch.tensor([[1.0, 1, 9, 9]] * 2)),
                          gt_classes=torch.tensor([0, 4]))
    from detectron2.utils.events import EventStorage

    with EventStorage():
        losses = predictor.losses((scores, torch.zeros(2, 16)), [proposals])
    expected = focal_cross_entropy(scores, torch.tensor([0, 4]), 1.5)
    assert losses["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["loss_cls"].item() < torch.nn.functional.cross_entropy(
        scores, torch.tensor([0, 4])).item()


# ------------------------------------------------------------------------------ views
def test_strong_view_keeps_geometry_and_changes_pixels():
    from imagescore_det.teacher.views import strong_view, view_seed

    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    image[:, :, :40] = 200  # left half bright
    image[0, :, :40] = 120  # (blue in BGR: not gray)
    strong = strong_view(image, view_seed(7, 100, 0))
    assert strong.shape == image.shape and strong.dtype == torch.uint8
    assert not torch.equal(strong, image)
    assert torch.equal(strong, strong_view(image, view_seed(7, 100, 0)))  # same seed, same view
    others = [strong_view(image, view_seed(7, it, 0)) for it in range(101, 121)]
    assert not all(torch.equal(strong, o) for o in others)
    # nothing moved: in every view the left half stays brighter than the right (a flip, crop
    # or shift would swap or mix them); erasing covers at most 20% per patch
    for view in [strong] + others:
        assert view[:, :, :40].float().mean() > view[:, :, 40:].float().mean()
    state = torch.random.get_rng_state()
    strong_view(image, 3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is untouched


# ------------------------------------------------------------------------------ training
def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_teacher_follows_student_by_ema_and_checkpoints_round_trip(tiny_cfg, tmp_path):
    """Burn-in 2, then one teacher step at keep rate 0.5: the final teacher is exactly
    0.5 x the student at the end of the burn-in + 0.5 x the final student; the checkpoint
    holds both and the selection; --resume restores them; the export loads in
    DefaultPredictor."""
    from detectron2.engine import DefaultPredictor

    from imagescore_det.engine import CheckpointMismatchError
    from imagescore_det.engine.safe_load import FORMAT_KEY, LAST_CHECKPOINT
    from imagescore_det.teacher.trainer import TEACHER_EXPORT, TeacherTrainer

    opts = TEACHER_OPTS + ["TEACHER.SELECTOR", "random", "TEACHER.TOP_FRACTION", "0.5"]
    trainer = TeacherTrainer(tiny_cfg(*opts, max_iter=3))
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = tmp_path / "out"
    burn_in, final = _load(out / "model_0000001.pth"), _load(out / "model_final.pth")
    assert final["teacher_state"]["active"] and final["teacher_state"]["ema_steps"] == 1
    selection = final["teacher_state"]["selection"]
    assert selection["selector"] == "random" and selection["pool_size"] == 12
    assert len(selection["indices"]) == 6  # ceil(0.5 * 12)
    student_b, student_f, teacher = burn_in["model"], final["model"], final["teacher"]
    assert not _states_equal(student_b, student_f)
    for key, value in teacher.items():
        if value.is_floating_point():
            expected = 0.5 * student_b[key] + 0.5 * student_f[key]
            assert torch.allclose(value, expected, atol=1e-6, rtol=0), key
    export = _load(out / TEACHER_EXPORT)
    assert _states_equal(export["model"], teacher)
    assert set(export) == {"model", "iteration", FORMAT_KEY}  # a plain Detectron2 checkpoint
    predictor_cfg = tiny_cfg(*opts, "MODEL.WEIGHTS", str(out / TEACHER_EXPORT), max_iter=3)
    predictor = DefaultPredictor(predictor_cfg)
    assert _states_equal(predictor.model.state_dict(), teacher)
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["evaluated"] == "teacher" and report["teacher"]["ema_steps"] == 1
    # the unsupervised losses the step summed: classification only (UNSUP_REGRESSION False)
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = {k for r in rows for k in r if k.startswith("teacher/loss")}
    assert logged == {"teacher/loss_rpn_cls", "teacher/loss_cls"}

    resumed = TeacherTrainer(tiny_cfg(*opts, max_iter=4))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    assert _states_equal(resumed.teacher.state_dict(), teacher)
    assert resumed.state.ema_steps == 1 and resumed.state.selection == selection
    resumed.train()
    last = _load(out / "model_final.pth")
    for key, value in last["teacher"].items():
        if value.is_floating_point():
            expected = 0.5 * teacher[key] + 0.5 * last["model"][key]
            assert torch.allclose(value, expected, atol=1e-6, rtol=0), key

    # a checkpoint of another mode (no teacher) past the burn-in: refused with the fix
    other = tmp_path / "other"
    other.mkdir()
    supervised = {k: v for k, v in final.items() if k not in ("teacher", "teacher_state")}
    torch.save(supervised, other / "model_0000002.pth")  # as the supervised Trainer writes
    (other / LAST_CHECKPOINT).write_text("model_0000002.pth")
    plain = TeacherTrainer(tiny_cfg(*opts, "OUTPUT_DIR", str(other), max_iter=4))
    with pytest.raises(CheckpointMismatchError, match="without a teacher.*MODEL.WEIGHTS"):
        plain.resume_or_load(resume=True)


def test_train_net_end_to_end_and_eval_only_evaluates_the_teacher(tmp_path):
    """tools/train_net.py with configs/synthetic/teacher_V16tiny_quick.yaml at tiny size:
    2 burn-in iterations, 2 teacher steps; --eval-only on its checkpoint evaluates the teacher
    (the AP of the run's final evaluation, which is the teacher's)."""
    from imagescore_det.data import generate_synthetic_voc
    from test_train_net import check, copypaste_ap, opts_for, run_train_net

    generate_synthetic_voc(tmp_path / "synthetic_voc", seed=5, num_labeled=8, num_unlabeled=6,
                           num_test=4, min_size=80, max_size=96, min_obj_size=30,
                           max_obj_size=48, max_objects=2)
    config = os.path.join(os.path.dirname(TINY_CONFIG), "teacher_V16tiny_quick.yaml")
    out = tmp_path / "out"
    teacher_opts = ["TEACHER.BURN_IN_ITER", "2", "TEACHER.SCORE_THRESH", "0.0"]
    log = check(run_train_net(tmp_path, opts_for(out, *teacher_opts), config=config))
    assert "end of the burn-in, the teacher is a copy of the student" in log
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    unsup = [r["loss_unsup"] for r in rows if "loss_unsup" in r]
    assert len(unsup) >= 1 and all(v == v for v in unsup)  # logged after the burn-in, finite
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["evaluated"] == "teacher" and report["teacher"]["ema_steps"] == 2
    assert report["teacher"]["refreshes"][0]["num_selected"] == 6  # SELECTOR none: whole pool
    assert (out / "model_final_teacher.pth").is_file()
    evaluated = check(run_train_net(tmp_path, opts_for(
        tmp_path / "eval", *teacher_opts, "MODEL.WEIGHTS", str(out / "model_final.pth")),
        flags=["--eval-only"], config=config))
    assert "holds a teacher: evaluating the teacher" in evaluated
    assert copypaste_ap(evaluated) == copypaste_ap(log)
    # the student is evaluated beside the teacher, into inference/student/
    student = report["teacher"]["student_eval_after"]
    student_file = out / "inference" / "student" / "voc_per_class_synthetic_voc_test.json"
    assert json.loads(student_file.read_text())["mean"]["AP50"] == pytest.approx(
        student["bbox"]["AP50"], abs=1e-4)
    assert f"VOC AP50 at the end, student:  {student['bbox']['AP50']:.2f}" in log
    # the quick config's fair baseline (TEACHER.PAIRED_BASELINE), in the summary and report
    summary = log[log.rindex("Teacher-student run summary"):]
    assert "supervised only: a paired copy from the same checkpoint at iteration 2" in summary
    assert "pseudo-labels - supervised:" in summary and "95% interval [" in summary
    paired = report["paired_baseline"]["summary"]
    assert paired["AP50_with_pseudo_labels"] == pytest.approx(report["eval_after"]["bbox"]["AP50"])
    assert (out / "paired_supervised" / "model_final.pth").is_file()


def test_a_run_resumed_at_a_checkpoint_replays_the_uninterrupted_one(tiny_cfg, tmp_path):
    """Killed after iteration 1 (the periodic checkpoint) and resumed: the burn-in's end, the
    teacher's ranking, the unlabeled stream and the strong views replay, so the final
    teacher and student equal the uninterrupted run's, bit for bit."""
    import shutil

    from imagescore_det.engine.safe_load import LAST_CHECKPOINT
    from imagescore_det.teacher.trainer import TeacherTrainer

    opts = TEACHER_OPTS + ["TEACHER.SELECTOR", "random", "TEACHER.TOP_FRACTION", "0.5"]
    whole = TeacherTrainer(tiny_cfg(*opts, max_iter=4))
    whole.resume_or_load(resume=False)
    whole.train()
    uninterrupted = _load(tmp_path / "out" / "model_final.pth")
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(tmp_path / "out" / "model_0000001.pth", killed)  # what the kill leaves
    (killed / LAST_CHECKPOINT).write_text("model_0000001.pth")
    resumed = TeacherTrainer(tiny_cfg(*opts, "OUTPUT_DIR", str(killed), max_iter=4))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2 and not resumed.state.active
    resumed.train()
    replayed = _load(killed / "model_final.pth")
    assert _states_equal(replayed["teacher"], uninterrupted["teacher"])
    assert _states_equal(replayed["model"], uninterrupted["model"])
    assert replayed["teacher_state"]["selection"] == uninterrupted["teacher_state"]["selection"]
    assert not _states_equal(uninterrupted["teacher"], uninterrupted["model"])


# ------------------------------------------------------------------------------ two processes
_TWO_RANKS = """
import os
import sys

import torch

sys.path.insert(0, {tests!r})
from conftest import TINY_CONFIG, tiny_cfg_opts  # noqa: E402
from detectron2.engine import launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from imagescore_det.data import SYNTHETIC_CLASSES, register_voc  # noqa: E402
from imagescore_det.engine import load_config  # noqa: E402
from imagescore_det.teacher.trainer import TeacherTrainer  # noqa: E402


class Recording(TeacherTrainer):
    seen = []

    def next_unlabeled(self):
        batch = super().next_unlabeled()
        self.seen.append([self.iter, [d["file_name"] for d in batch]])
        return batch


def main():
    for split in ("labeled", "unlabeled", "test"):
        register_voc(f"tiny_voc_{{split}}", {dirname!r}, split, 2007, SYNTHETIC_CLASSES)
    cfg = load_config(TINY_CONFIG, tiny_cfg_opts({out!r}, 4) + {opts!r})
    cfg.freeze()
    trainer = Recording(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    student = trainer.model
    torch.save({{"teacher": trainer.teacher.state_dict(), "seen": Recording.seen,
                "ddp": type(student).__name__, "teacher_type": type(trainer.teacher).__name__,
                "student": student.module.state_dict()}},
               os.path.join({out!r}, f"rank{{comm.get_rank()}}.pt"))


if __name__ == "__main__":
    launch(main, 2, dist_url="auto")
"""


def test_two_processes_share_one_teacher_and_shard_the_unlabeled_batches(tiny_voc, tmp_path):
    """gloo, 2 CPU processes (Detectron2's launch): only the student is wrapped in
    DistributedDataParallel; the teacher is identical on both ranks and is the EMA of the
    (identical) students of the checkpoints, exactly; each rank's unlabeled images are its
    own part of the seeded permutation of the selection (TrainingSampler's rank::world)."""
    import subprocess
    import sys

    from detectron2.data import DatasetCatalog

    from imagescore_det.engine.resume import derived_seed

    out = tmp_path / "out"
    out.mkdir()
    opts = TEACHER_OPTS + ["SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0",
                           "DATASETS.TEST", "()"]
    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_RANKS.format(tests=os.path.dirname(__file__), out=str(out),
                                        dirname=tiny_voc["dirname"], opts=opts))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [_load(out / f"rank{r}.pt") for r in (0, 1)]
    assert [r["ddp"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert [r["teacher_type"] for r in ranks] == ["GeneralizedRCNN"] * 2  # not wrapped
    assert _states_equal(ranks[0]["teacher"], ranks[1]["teacher"])
    assert _states_equal(ranks[0]["student"], ranks[1]["student"])
    # keep rate 0.5, copy at iteration 2 (the student after iteration 1), steps 2 and 3
    s1, s2 = (_load(out / f"model_000000{i}.pth")["model"] for i in (1, 2))
    s3 = ranks[0]["student"]
    assert _states_equal(_load(out / "model_final.pth")["model"], s3)
    for key, value in ranks[0]["teacher"].items():
        if value.is_floating_point():
            expected = 0.5 * (0.5 * s1[key] + 0.5 * s2[key]) + 0.5 * s3[key]
            assert torch.allclose(value, expected, atol=1e-6, rtol=0), key
    assert not _states_equal(ranks[0]["teacher"], s3)
    # the unlabeled batches: 1 image per rank a step (2 in all); at each re-seeded
    # iteration the loader's permutation is torch.randperm under derived_seed(SEED 7, it)
    pool = [d["file_name"] for d in DatasetCatalog.get("tiny_voc_unlabeled")]
    for it in (2, 3):
        g = torch.Generator()
        g.manual_seed(derived_seed(7, it))
        perm = torch.randperm(len(pool), generator=g).tolist()
        for rank in (0, 1):
            assert [names for i, names in ranks[rank]["seen"] if i == it] == [[pool[perm[rank]]]]
    assert ranks[0]["seen"] != ranks[1]["seen"]


@pytest.mark.parametrize("kill_after", [2, 3], ids=["mid-training", "at-a-refresh"])
def test_resume_after_the_burn_in_and_at_a_refresh_replays_bit_for_bit(tiny_cfg, tmp_path,
                                                                        kill_after):
    """Burn-in 2, refreshes at 2 and 4 (REFRESH 2), 6 iterations, a checkpoint after every
    one. Killed after iteration 2 (resumes mid-training, after the burn-in) or after 3
    (resumes at the refresh of iteration 4): the final teacher, student, selection and the
    refresh history equal the uninterrupted run's, bit for bit; and the known answers: the
    teacher is the EMA (keep 0.5) of the checkpoints' students from the copy at iteration 2,
    and each refresh keeps random's top half under seed SEED * 1000 + refresh number."""
    import shutil

    from imagescore_det.engine import selection as sel
    from imagescore_det.engine.ranking import select_top
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT
    from imagescore_det.teacher.trainer import TeacherTrainer

    opts = TEACHER_OPTS + ["TEACHER.SELECTOR", "random", "TEACHER.TOP_FRACTION", "0.5",
                           "TEACHER.REFRESH", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
                           "DATASETS.TEST", "()"]
    whole = TeacherTrainer(tiny_cfg(*opts, max_iter=6))
    whole.resume_or_load(resume=False)
    whole.train()
    out = tmp_path / "out"
    uninterrupted = _load(out / "model_final.pth")
    killed = tmp_path / "killed"
    killed.mkdir()
    name = f"model_{kill_after:07d}.pth"
    shutil.copy(out / name, killed)  # what the kill leaves
    (killed / LAST_CHECKPOINT).write_text(name)
    resumed = TeacherTrainer(tiny_cfg(*opts, "OUTPUT_DIR", str(killed), max_iter=6))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == kill_after + 1 and resumed.state.active
    resumed.train()
    replayed = _load(killed / "model_final.pth")
    assert _states_equal(replayed["teacher"], uninterrupted["teacher"])
    assert _states_equal(replayed["model"], uninterrupted["model"])
    state, whole_state = replayed["teacher_state"], uninterrupted["teacher_state"]
    assert state["selection"] == whole_state["selection"] and state["ema_steps"] == 4
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(state["history"]) == strip(whole_state["history"])
    assert [e["iteration"] for e in state["history"]] == [2, 4]
    # known answers
    teacher = None
    for it in range(1, 6):  # the student after iterations 1..5 (model_final: after 5)
        student = _load(out / (f"model_{it:07d}.pth" if it < 5 else "model_final.pth"))["model"]
        teacher = dict(student) if teacher is None else {
            k: 0.5 * teacher[k] + 0.5 * v if v.is_floating_point() else v
            for k, v in student.items()}
    for key, value in replayed["teacher"].items():
        assert torch.allclose(value.float(), teacher[key].float(), atol=1e-6, rtol=0), key
    refreshes = {}
    for number, it in ((1, 2), (2, 4)):
        scores = sel.random_scores(12, 7 * 1000 + number)
        refreshes[it] = sorted(int(i) for i in select_top(scores, 0.5))
    assert refreshes[2] != refreshes[4]
    assert state["selection"]["indices"] == refreshes[4]
    assert _load(killed / "model_0000003.pth" if kill_after == 2 else out / "model_0000003.pth")[
        "teacher_state"]["selection"]["indices"] == refreshes[2]


def test_paired_baseline_continues_supervised_with_strong_views_from_the_burn_in(tiny_cfg,
                                                                                 tmp_path):
    """TEACHER.PAIRED_BASELINE: the copy in paired_supervised/ starts from model_round1.pth
    (the state before the burn-in's end), trains the same iterations on the same labeled
    batches (same images, same flips) but on their strong views, exactly strong_view(the
    main run's image, view_seed(SEED, iteration, place)), keeps an EMA teacher; report.json's
    paired_baseline compares the two teachers' detections (difference = the two APs').
    (The tiny VGG16 config reads images as RGB.)"""
    import random

    import numpy as np

    from imagescore_det.engine.paired import PAIRED_DIR, ROUND_CHECKPOINT
    from imagescore_det.teacher.trainer import TeacherTrainer
    from imagescore_det.teacher.views import strong_view, view_seed

    seen = {}

    class Recording(TeacherTrainer):
        def labeled_inputs(self, batch, iteration):
            out = super().labeled_inputs(batch, iteration)
            seen.setdefault(bool(self.cfg.TEACHER.SUPERVISED_ONLY), {})[iteration] = (
                [d["file_name"] for d in batch], [d["image"].clone() for d in batch],
                [d["image"].clone() for d in out], np.random.get_state()[1].tolist(),
                random.getstate())
            return out

    trainer = Recording(tiny_cfg(*TEACHER_OPTS, "TEACHER.PAIRED_BASELINE", "True", max_iter=4))
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = tmp_path / "out"
    start = _load(out / f"{ROUND_CHECKPOINT}.pth")
    assert start["iteration"] == 1 and not start["teacher_state"]["active"]
    main, copy = seen[False], seen[True]
    assert sorted(main) == sorted(copy) == [2, 3]
    for it in (2, 3):
        names, weak, trained, np_state, py_state = main[it]
        copy_names, copy_weak, copy_trained, copy_np, copy_py = copy[it]
        assert copy_names == names and len(names) == 2
        # the same generators' states (the main run's unlabeled half draws from its own)
        assert copy_np == np_state and copy_py == py_state
        assert all(torch.equal(a, b) for a, b in zip(copy_weak, weak))  # same flips
        assert all(torch.equal(a, b) for a, b in zip(trained, weak))  # main: as loaded
        for i, (image, view) in enumerate(zip(weak, copy_trained)):
            assert torch.equal(view, strong_view(image, view_seed(7, it, i), "RGB"))
            assert not torch.equal(view, image)
    final = _load(out / PAIRED_DIR / "model_final.pth")
    assert final["teacher_state"]["ema_steps"] == 2 and final["teacher_state"]["active"]
    assert final["teacher_state"]["selection"] is None  # no unlabeled images
    assert not _states_equal(final["teacher"], _load(out / "model_final.pth")["teacher"])
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["paired_baseline"] is True
    s = report["paired_baseline"]["summary"]
    assert report["paired_baseline"]["start_iteration"] == 2
    assert report["paired_baseline"]["iterations"] == 2
    assert s["AP50_with_pseudo_labels"] == pytest.approx(report["eval_after"]["bbox"]["AP50"])
    copy_report = json.loads((out / PAIRED_DIR / "report.json").read_text())
    assert s["AP50_supervised_only"] == pytest.approx(copy_report["eval_after"]["bbox"]["AP50"])
    assert s["AP50_difference"] == pytest.approx(
        s["AP50_with_pseudo_labels"] - s["AP50_supervised_only"], abs=1e-6)
    lo, hi = s["AP50_difference_ci95"]
    assert lo <= s["AP50_difference"] <= hi


def test_truth_targets_are_the_pool_annotations_in_the_weak_view(tiny_cfg, tiny_voc,
                                                                 monkeypatch):
    """TEACHER.TARGETS truth (bench_teacher's oracle arm): the student's targets on each
    unlabeled image are its own annotations (the same classes, as many boxes, each box's area
    scaled by the resize's square), and the teacher is not asked; a pool without truth is
    refused before training."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from imagescore_det.data import SYNTHETIC_CLASSES
    from imagescore_det.engine import ConfigError
    import imagescore_det.teacher.trainer as module

    seen = []
    original = module.unsupervised_loss

    def recording(student, strong, targets, names, weight):
        seen.append((strong, targets))
        return original(student, strong, targets, names, weight)

    monkeypatch.setattr(module, "unsupervised_loss", recording)
    trainer = module.TeacherTrainer(tiny_cfg(*TEACHER_OPTS, "TEACHER.TARGETS", "truth",
                                             "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
                                             max_iter=3))
    monkeypatch.setattr(trainer.teacher, "inference", None)  # never called
    trainer.resume_or_load(resume=False)
    trainer.train()
    truth = {d["file_name"]: d for d in DatasetCatalog.get("tiny_voc_unlabeled")}
    [(strong, targets)] = seen
    assert len(targets) == 2
    for view, target in zip(strong, targets):
        record = truth[view["file_name"]]
        scale = view["image"].shape[1] / record["height"]
        boxes = sorted([a["category_id"], (a["bbox"][2] - a["bbox"][0]) *
                        (a["bbox"][3] - a["bbox"][1]) * scale ** 2] for a in record["annotations"])
        got = sorted([int(c), float(a)] for c, a in zip(target.gt_classes, target.gt_boxes.area()))
        assert len(got) == len(boxes) > 0
        for (c1, a1), (c2, a2) in zip(got, boxes):
            assert c1 == c2 and a1 == pytest.approx(a2, rel=0.03)
        assert "instances" not in view

    if "tiny_voc_no_truth" not in DatasetCatalog.list():
        DatasetCatalog.register("tiny_voc_no_truth", lambda: [
            {k: v for k, v in d.items() if k != "annotations"}
            for d in DatasetCatalog.get("tiny_voc_unlabeled")])
        MetadataCatalog.get("tiny_voc_no_truth").set(thing_classes=list(SYNTHETIC_CLASSES))
    with pytest.raises(ConfigError, match="TEACHER.TARGETS truth.*tiny_voc_no_truth.*Name a pool"):
        module.TeacherTrainer(tiny_cfg(*TEACHER_OPTS, "TEACHER.TARGETS", "truth",
                                       "IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_no_truth',)"))


def test_an_unlabeled_batch_the_processes_cannot_share_is_refused(tiny_cfg, monkeypatch):
    """IMS_PER_BATCH 2 x ratio 0.5 = 1 unlabeled image a step: 2 processes cannot share it
    (1 process can); stopped before anything is built, naming the key and the fix."""
    from detectron2.utils import comm

    from imagescore_det.engine import ConfigError
    from imagescore_det.teacher.trainer import TeacherTrainer

    cfg = tiny_cfg(*TEACHER_OPTS, "TEACHER.UNLABELED_PER_LABELED", "0.5")
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"UNLABELED_PER_LABELED=0.5 gives an unlabeled batch "
                                          r"of 1 images.*2 processes.*multiple of the number"):
        TeacherTrainer(cfg)
    monkeypatch.setattr(comm, "get_world_size", lambda: 1)
    TeacherTrainer(cfg)  # one process: fine


# ------------------------------------------------------------------------------ pseudo-box precision
def _boxes(rows, scores=None):
    """Instances of (x0, y0, x1, y1, class) rows: a teacher's prediction with ``scores``, or
    the truth (``gt_boxes`` / ``gt_classes``) without."""
    out = Instances((100, 100))
    boxes = Boxes(torch.tensor([r[:4] for r in rows], dtype=torch.float32).reshape(-1, 4))
    classes = torch.tensor([r[4] for r in rows], dtype=torch.int64)
    if scores is None:
        out.gt_boxes, out.gt_classes = boxes, classes
    else:
        out.pred_boxes, out.pred_classes = boxes, classes
        out.scores = torch.tensor(scores, dtype=torch.float32)
    return out


def test_pseudo_box_precision_and_recall_known_answer():
    """Image 1: an exact box (TP), its duplicate (FP: the true box is taken), a box on a true
    box of another class (FP), a box at IoU 100/160 (TP), one at IoU 0.4 (FP) and a correct box
    below the threshold (not a pseudo-box); image 2: no pseudo-box, one true box; image 3: two
    pseudo-boxes, no truth. Sums 2 TP, 5 FP, 4 true boxes: precision 2/7, recall 1/2."""
    from imagescore_det.teacher.targets import pseudo_box_counts, pseudo_box_scalars

    truth1 = _boxes([(0, 0, 10, 10, 0), (20, 20, 30, 30, 1), (40, 40, 50, 50, 0)])
    pred1 = _boxes([(0, 0, 10, 10, 0), (1, 0, 10, 10, 0), (20, 20, 30, 30, 0),
                    (40, 40, 50, 56, 0), (20, 20, 30, 30, 1), (20, 20, 30, 45, 1)],
                   [0.9, 0.8, 0.95, 0.75, 0.5, 0.8])
    truth2, pred2 = _boxes([(5, 5, 20, 20, 2)]), _boxes([(5, 5, 20, 20, 2)], [0.3])
    truth3, pred3 = _boxes([]), _boxes([(0, 0, 9, 9, 1), (50, 50, 60, 60, 3)], [0.99, 0.7])
    rows = pseudo_box_counts([pred1, pred2, pred3], [truth1, truth2, truth3], 0.7)
    assert rows == [(2, 3, 3), (0, 0, 1), (0, 2, 0)]
    totals = [10, 1, 7]  # the running sums before this step
    scalars = pseudo_box_scalars(rows, totals)
    assert scalars == {"teacher/pseudo_tp": 2, "teacher/pseudo_fp": 5, "teacher/pseudo_gt": 4,
                       "teacher/pseudo_precision": 2 / 7, "teacher/pseudo_recall": 0.5,
                       "teacher/pseudo_tp_total": 12, "teacher/pseudo_fp_total": 6,
                       "teacher/pseudo_gt_total": 11}
    assert totals == [12, 6, 11]
    # a batch without pseudo-box: precision undefined, left out (no NaN); recall 0
    only2 = pseudo_box_scalars(pseudo_box_counts([pred2], [truth2], 0.7), [0, 0, 0])
    assert only2 == {"teacher/pseudo_tp": 0, "teacher/pseudo_fp": 0, "teacher/pseudo_gt": 1,
                     "teacher/pseudo_recall": 0.0, "teacher/pseudo_tp_total": 0,
                     "teacher/pseudo_fp_total": 0, "teacher/pseudo_gt_total": 1}
    # a batch without truth: recall undefined, left out; precision 0
    only3 = pseudo_box_scalars(pseudo_box_counts([pred3], [truth3], 0.7), [0, 0, 0])
    assert only3["teacher/pseudo_precision"] == 0.0 and "teacher/pseudo_recall" not in only3
    assert (only3["teacher/pseudo_tp"], only3["teacher/pseudo_fp"], only3["teacher/pseudo_gt"]) \
        == (0, 2, 0)


def test_online_steps_log_pseudo_box_precision_only_with_truth(tiny_cfg, tiny_voc, tmp_path,
                                                              monkeypatch):
    """A pool with truth: every online step logs the teacher's boxes against it (here a
    teacher whose one box per image hits nothing: 0 TP, one FP per image, as many true boxes
    as the images' annotations), the teacher never sees the truth, and the running sums reach
    metrics.json; a pool without annotations and the supervised-only copy log nothing."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from imagescore_det.data import SYNTHETIC_CLASSES
    import imagescore_det.teacher.trainer as module

    truth = {d["file_name"]: len(d["annotations"])
             for d in DatasetCatalog.get("tiny_voc_unlabeled")}
    seen = []

    def fake_inference(inputs, do_postprocess=True):
        seen.append([dict(d) for d in inputs])
        return [_boxes([(0, 0, 1, 1, 0)], [0.99]) for _ in inputs]

    opts = [*TEACHER_OPTS, "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
    trainer = module.TeacherTrainer(tiny_cfg(*opts, max_iter=4))
    monkeypatch.setattr(trainer.teacher, "inference", fake_inference)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert len(seen) == 2  # iterations 2 and 3
    assert all("instances" not in d and "annotations" not in d for batch in seen for d in batch)
    gts = [sum(truth[d["file_name"]] for d in batch) for batch in seen]
    history = trainer.storage.history
    assert [v for v, _ in history("teacher/pseudo_tp").values()] == [0, 0]
    assert [v for v, _ in history("teacher/pseudo_fp").values()] == [2, 2]
    assert [v for v, _ in history("teacher/pseudo_gt").values()] == gts
    assert [v for v, _ in history("teacher/pseudo_precision").values()] == [0.0, 0.0]
    assert [v for v, _ in history("teacher/pseudo_recall").values()] == [0.0, 0.0]
    assert trainer.state.pseudo_totals == [0, 4, sum(gts)]
    with open(os.path.join(trainer.cfg.OUTPUT_DIR, "metrics.json")) as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    assert (last["teacher/pseudo_fp_total"], last["teacher/pseudo_gt_total"]) == (4, sum(gts))

    if "tiny_voc_no_truth" not in DatasetCatalog.list():
        DatasetCatalog.register("tiny_voc_no_truth", lambda: [
            {k: v for k, v in d.items() if k != "annotations"}
            for d in DatasetCatalog.get("tiny_voc_unlabeled")])
        MetadataCatalog.get("tiny_voc_no_truth").set(thing_classes=list(SYNTHETIC_CLASSES))
    for extra in (["IMAGE_SCORE.UNLABELED_DATASETS", "('tiny_voc_no_truth',)"],
                  ["TEACHER.SUPERVISED_ONLY", "True"]):
        trainer = module.TeacherTrainer(tiny_cfg(*opts, *extra, "OUTPUT_DIR",
                                                 str(tmp_path / extra[0]), max_iter=3))
        trainer.resume_or_load(resume=False)
        trainer.train()
        assert not any(k.startswith("teacher/pseudo_") and k != "teacher/pseudo_boxes_per_image"
                       for k in trainer.storage.histories())


# ------------------------------------------------------------------------------ rank weighting
def test_rank_repeat_factors_known_answer():
    """TEACHER.RANK_WEIGHTING: the image of 0-based rank r among N weighs w = 1 - r / N and
    its repeat factor is w / mean(w) = 2 (N - r) / (N + 1), given per pool index."""
    import numpy as np

    from imagescore_det.engine.ranking import rank_repeat_factors

    # pool 2 is best (w 1), then 0 (0.75), 3 (0.5), 1 (0.25); mean(w) = 0.625
    assert rank_repeat_factors([2, 0, 3, 1]).tolist() == pytest.approx([1.2, 0.4, 1.6, 0.8],
                                                                       abs=1e-15)
    assert rank_repeat_factors([0, 1, 2]).tolist() == [1.5, 1.0, 0.5]  # exact
    assert rank_repeat_factors([0]).tolist() == [1.0]
    factors = rank_repeat_factors(np.random.default_rng(3).permutation(37))
    assert factors.mean() == pytest.approx(1.0, abs=1e-12)  # uniform sampling's budget
    assert factors.max() == pytest.approx(2 * 37 / 38) and factors.min() == pytest.approx(2 / 38)
    with pytest.raises(ValueError, match="permutation"):
        rank_repeat_factors([0, 0, 2])


def _weighted_selection(order):
    return {"iteration": 2, "selector": "random", "indices": sorted(order), "order": order,
            "pool_size": len(order)}


def test_rank_weighted_sampler_draws_in_proportion_to_the_weights():
    """Over 20000 draws (fixed seed) each pool image's share is w / sum(w) within 0.01 (the
    best image 2/11 = 0.18, the worst 1/55); a uniform sampler (1/10 each) fails the same
    check. It is Detectron2's RepeatFactorTrainingSampler, deterministic for a seed."""
    import itertools

    import numpy as np
    from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

    from imagescore_det.teacher.trainer import unlabeled_sampler

    order = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]
    n, draws = len(order), 20000
    expected = np.empty(n)
    expected[order] = [(1 - r / n) for r in range(n)]
    expected /= expected.sum()
    sampler = unlabeled_sampler(_weighted_selection(order), seed=11)
    assert isinstance(sampler, RepeatFactorTrainingSampler)
    drawn = list(itertools.islice(iter(sampler), draws))
    share = np.bincount(drawn, minlength=n) / draws
    assert np.abs(share - expected).max() < 0.01, (share, expected)
    assert drawn == list(itertools.islice(iter(unlabeled_sampler(_weighted_selection(order),
                                                                  seed=11)), draws))
    uniform = np.bincount(list(itertools.islice(iter(TrainingSampler(n, seed=11)), draws)),
                          minlength=n) / draws
    assert np.abs(uniform - expected).max() > 0.05
    # without an order (no weighting): the uniform TrainingSampler, as before
    plain = unlabeled_sampler({"indices": [0, 4, 5], "order": None, "pool_size": 10}, seed=11)
    assert type(plain) is TrainingSampler


def test_rank_weighted_sampler_shards_one_stream_across_ranks(monkeypatch):
    """Each rank draws its own part (rank::world) of the one stream the seed gives, as
    TrainingSampler shards the uniform one."""
    import itertools

    from detectron2.utils import comm

    from imagescore_det.teacher.trainer import unlabeled_sampler

    selection = _weighted_selection([4, 1, 0, 3, 2, 5])
    stream = list(itertools.islice(iter(unlabeled_sampler(selection, seed=5)), 40))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        part = list(itertools.islice(iter(unlabeled_sampler(selection, seed=5)), 20))
        assert part == stream[rank::2]


@pytest.mark.parametrize("opts, keys, fix", [
    (["TEACHER.RANK_WEIGHTING", "True"], ("TEACHER.RANK_WEIGHTING", "TEACHER.SELECTOR none"),
     "name a selector"),
    (["TEACHER.RANK_WEIGHTING", "True", "TEACHER.SELECTOR", "random", "TEACHER.TOP_FRACTION",
      "0.5"], ("TEACHER.RANK_WEIGHTING", "TEACHER.TOP_FRACTION 0.5"),
     "set TEACHER.TOP_FRACTION 1.0"),
])
def test_rank_weighting_contradictions_are_refused(tiny_cfg, opts, keys, fix):
    from imagescore_det.engine import ConfigError

    tiny_cfg(*TEACHER_OPTS, "TEACHER.RANK_WEIGHTING", "True", "TEACHER.SELECTOR", "random")
    with pytest.raises(ConfigError) as err:
        tiny_cfg(*TEACHER_OPTS, *opts)
    assert all(k in str(err.value) for k in keys) and fix in str(err.value)


def test_rank_weighted_run_draws_the_known_images_and_resumes_them(tiny_cfg, tmp_path):
    """RANK_WEIGHTING with the random selector: the selection is the whole pool with random's
    ranking (seed SEED * 1000 + 1); at each online iteration (a checkpoint after every one,
    so the loader is re-seeded at each) the batch is the first two draws of
    RepeatFactorTrainingSampler(the ranking's repeat factors, derived_seed(SEED, it)), not
    the uniform sampler's; killed after iteration 2 and resumed, the run draws the same
    images and ends bit for bit equal; a resume with the weighting switched off is refused."""
    import itertools
    import shutil

    from detectron2.data import DatasetCatalog
    from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

    from imagescore_det.engine import selection as sel
    from imagescore_det.engine.checkpoint import CheckpointMismatchError
    from imagescore_det.engine.ranking import rank_order, rank_repeat_factors
    from imagescore_det.engine.resume import derived_seed
    from imagescore_det.engine.safe_load import LAST_CHECKPOINT
    from imagescore_det.teacher.trainer import TeacherTrainer

    class Recording(TeacherTrainer):
        def next_unlabeled(self):
            batch = super().next_unlabeled()
            self.seen[self.iter] = [d["file_name"] for d in batch]
            return batch

    opts = TEACHER_OPTS + ["TEACHER.SELECTOR", "random", "TEACHER.RANK_WEIGHTING", "True",
                           "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()",
                           "DATALOADER.ASPECT_RATIO_GROUPING", "False"]
    whole = Recording(tiny_cfg(*opts, max_iter=5))
    whole.seen = {}
    whole.resume_or_load(resume=False)
    whole.train()
    out = tmp_path / "out"
    uninterrupted = _load(out / "model_final.pth")
    pool = [d["file_name"] for d in DatasetCatalog.get("tiny_voc_unlabeled")]
    order = rank_order(sel.random_scores(len(pool), 7 * 1000 + 1)).tolist()
    selection = uninterrupted["teacher_state"]["selection"]
    assert selection["order"] == order and selection["indices"] == list(range(len(pool)))
    factors = torch.tensor(rank_repeat_factors(order))
    weighted_differs = False
    for it in (2, 3, 4):
        seed = derived_seed(7, it)
        first = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=seed)), 2))
        assert whole.seen[it] == [pool[i] for i in first], it
        weighted_differs |= first != list(itertools.islice(iter(TrainingSampler(len(pool),
                                                                                 seed=seed)), 2))
    assert weighted_differs
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(out / "model_0000002.pth", killed)  # what the kill leaves
    (killed / LAST_CHECKPOINT).write_text("model_0000002.pth")
    plain = TeacherTrainer(tiny_cfg(*opts, "TEACHER.RANK_WEIGHTING", "False", "OUTPUT_DIR",
                                    str(killed), max_iter=5))
    with pytest.raises(CheckpointMismatchError, match="TEACHER.RANK_WEIGHTING"):
        plain.resume_or_load(resume=True)
    resumed = Recording(tiny_cfg(*opts, "OUTPUT_DIR", str(killed), max_iter=5))
    resumed.seen = {}
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    resumed.train()
    assert resumed.seen == {it: whole.seen[it] for it in (3, 4)}
    replayed = _load(killed / "model_final.pth")
    assert replayed["teacher_state"]["selection"] == selection
    assert _states_equal(replayed["teacher"], uninterrupted["teacher"])
    assert _states_equal(replayed["model"], uninterrupted["model"])
