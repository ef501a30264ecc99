"""The VOC07 -> VOC12 configs (configs/voc07_voc12/) run the paper's schedule.

The paper trains its detector to the plateau on the labeled set (LR steps inside), selects
once, then continues 1/6 of the warm-up at the final LR on labeled + pseudo-labeled images;
supervised-only runs the same schedule. The warm-up here is the supervised config the
variants build on (faster_rcnn_V16_voc07.yaml, faster_rcnn_R_50_C4_voc07.yaml). With
SOLVER.REFERENCE_WORLD_SIZE 8, ``--num-gpus N`` must keep all of that on any GPU count.
Config loading only: no model is built.
"""
import functools
import glob
import os

import pytest
import yaml

from imagescore_det.engine import Trainer, load_config
from imagescore_det.engine.config_loading import check_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_DIR = os.path.join(REPO, "configs", "voc07_voc12")
VARIANTS = sorted(p for p in glob.glob(os.path.join(PAPER_DIR, "*.yaml"))
                  if not os.path.basename(p).startswith("Base-")
                  and not p.endswith("_teacher.yaml"))
# the online teacher-student mode (issue 17) on the same schedule, one per backbone
TEACHER_VARIANTS = sorted(glob.glob(os.path.join(PAPER_DIR, "*_teacher.yaml")))
SELECTORS = {"image_score", "softmax", "random", "none"}
REFERENCE_WORLD_SIZE = 8
WORLD_SIZES = (1, 4, 16)
# what may differ between the selector variants of one backbone
VARIANT_KEYS = {"IMAGE_SCORE.SELECTOR", "OUTPUT_DIR"}


def name(path):
    return os.path.relpath(path, REPO)


@functools.lru_cache(maxsize=None)
def _load(path, opts=()):
    cfg = load_config(path, list(opts))
    cfg.freeze()
    return cfg


def _base_of(path):
    with open(path) as f:
        base = (yaml.safe_load(f) or {}).get("_BASE_")
    return os.path.normpath(os.path.join(os.path.dirname(path), base)) if base else None


def supervised_config(path):
    """The first config of the _BASE_ chain outside configs/voc07_voc12: the warm-up."""
    base = _base_of(path)
    while base is not None and os.path.dirname(base) == PAPER_DIR:
        base = _base_of(base)
    assert base is not None, f"{name(path)} does not build on a supervised config"
    return base


def flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(cfg_a, cfg_b, ignore=VARIANT_KEYS):
    a, b = flat(cfg_a), flat(cfg_b)
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def check_schedule(cfg, where):
    """Steps inside the warm-up, the round at its end, 1/6 of it after (within 1 iteration)."""
    start, max_iter = cfg.IMAGE_SCORE.START_ITER, cfg.SOLVER.MAX_ITER
    steps = tuple(cfg.SOLVER.STEPS)
    assert steps, f"{where}: no LR step, so the warm-up never reaches its final LR"
    assert all(step < start for step in steps), (
        f"{where}: SOLVER.STEPS {steps} not all before IMAGE_SCORE.START_ITER {start}: the "
        "LR must reach its final value inside the warm-up")
    assert 0 < start < max_iter, f"{where}: START_ITER {start}, MAX_ITER {max_iter}"
    continuation = max_iter - start
    assert abs(continuation - start / 6) <= 1, (
        f"{where}: {continuation} iterations after the round at {start}, not 1/6 of the "
        f"warm-up ({start / 6:.1f}; ratio {continuation / start:.3f})")
    assert cfg.IMAGE_SCORE.REFRESH_PERIOD == 0, f"{where}: the paper selects once"


def check_warmup(cfg, supervised, where):
    """The warm-up is the supervised config's schedule, run to its end."""
    for key in ("IMS_PER_BATCH", "BASE_LR", "STEPS", "GAMMA", "WARMUP_ITERS",
                "REFERENCE_WORLD_SIZE"):
        assert cfg.SOLVER[key] == supervised.SOLVER[key], (
            f"{where}: SOLVER.{key} {cfg.SOLVER[key]} differs from the supervised "
            f"warm-up's {supervised.SOLVER[key]}")
    assert cfg.IMAGE_SCORE.START_ITER == supervised.SOLVER.MAX_ITER, (
        f"{where}: the round at {cfg.IMAGE_SCORE.START_ITER}, not at the end of the "
        f"supervised schedule ({supervised.SOLVER.MAX_ITER})")


def groups():
    """Selector variants grouped by the Base-* config they build on (one per backbone)."""
    out = {}
    for path in VARIANTS:
        out.setdefault(_base_of(path), []).append(path)
    return out


GROUPS = groups()


def test_every_backbone_has_every_selector():
    assert len(GROUPS) >= 2, "expected the VGG16 and the R50-C4 variants"
    for base, paths in GROUPS.items():
        selectors = sorted(_load(p).IMAGE_SCORE.SELECTOR for p in paths)
        assert sorted(SELECTORS) == selectors, f"{name(base)}: {selectors}"


@pytest.mark.parametrize("path", VARIANTS, ids=name)
def test_paper_schedule(path):
    cfg = _load(path)
    assert cfg.IMAGE_SCORE.ENABLED
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == REFERENCE_WORLD_SIZE
    assert cfg.SOLVER.IMS_PER_BATCH % REFERENCE_WORLD_SIZE == 0
    check_schedule(cfg, name(path))


@pytest.mark.parametrize("path", VARIANTS, ids=name)
def test_warmup_is_the_supervised_schedule(path):
    check_warmup(_load(path), _load(supervised_config(path)), name(path))


@pytest.mark.parametrize("base", sorted(GROUPS), ids=name)
def test_selector_variants_differ_only_in_selector(base):
    paths = GROUPS[base]
    first = _load(paths[0])
    for path in paths[1:]:
        cfg = _load(path)
        differ = differences(first, cfg)
        assert not differ, f"{name(paths[0])} and {name(path)} differ in {differ}"
    supervised = [p for p in paths if _load(p).IMAGE_SCORE.SELECTOR == "none"]
    assert supervised, f"{name(base)}: no supervised-only variant"
    for path in supervised:
        assert _load(path).SOLVER.MAX_ITER == first.SOLVER.MAX_ITER
        assert _load(path).IMAGE_SCORE.START_ITER == first.IMAGE_SCORE.START_ITER
    assert len({_load(p).OUTPUT_DIR for p in paths}) == len(paths), "shared OUTPUT_DIR"


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("path", VARIANTS, ids=name)
def test_num_gpus_scales_the_whole_schedule(path, world_size):
    cfg = _load(path)
    scaled = Trainer.auto_scale_workers(cfg, world_size)
    where = f"{name(path)} scaled to {world_size} workers"
    factor = REFERENCE_WORLD_SIZE / world_size
    per_gpu = cfg.SOLVER.IMS_PER_BATCH // REFERENCE_WORLD_SIZE
    assert scaled.SOLVER.IMS_PER_BATCH == per_gpu * world_size, where
    assert scaled.SOLVER.BASE_LR == pytest.approx(cfg.SOLVER.BASE_LR / factor), where
    assert scaled.IMAGE_SCORE.START_ITER == round(cfg.IMAGE_SCORE.START_ITER * factor), where
    assert scaled.SOLVER.MAX_ITER == round(cfg.SOLVER.MAX_ITER * factor), where
    # the round stays at the same number of images seen, and so does the end
    for iters, orig in ((scaled.IMAGE_SCORE.START_ITER, cfg.IMAGE_SCORE.START_ITER),
                        (scaled.SOLVER.MAX_ITER, cfg.SOLVER.MAX_ITER)):
        assert abs(iters * scaled.SOLVER.IMS_PER_BATCH
                   - orig * cfg.SOLVER.IMS_PER_BATCH) <= scaled.SOLVER.IMS_PER_BATCH, where
    assert (scaled.IMAGE_SCORE.START_ITER / scaled.SOLVER.MAX_ITER
            == pytest.approx(cfg.IMAGE_SCORE.START_ITER / cfg.SOLVER.MAX_ITER, abs=1e-3)), where
    check_schedule(scaled, where)
    check_config(scaled, where)  # what Trainer checks after scaling


@pytest.mark.parametrize("path", VARIANTS, ids=name)
def test_reference_world_size_8_on_16_workers_keeps_the_round_inside(path):
    cfg = _load(path, ("SOLVER.REFERENCE_WORLD_SIZE", str(REFERENCE_WORLD_SIZE)))
    scaled = Trainer.auto_scale_workers(cfg, 16)
    assert scaled.IMAGE_SCORE.START_ITER < scaled.SOLVER.MAX_ITER
    check_config(scaled, f"{name(path)} on 16 workers")


def test_batch_set_by_hand_without_reference_world_size_leaves_the_round():
    """What the README warns about: the round does not move with a hand-set batch."""
    path = os.path.join(PAPER_DIR, "faster_rcnn_V16_imagescore.yaml")
    cfg = _load(path, ("SOLVER.REFERENCE_WORLD_SIZE", "0", "SOLVER.IMS_PER_BATCH", "4",
                       "SOLVER.BASE_LR", "0.0025"))
    scaled = Trainer.auto_scale_workers(cfg, 2)
    assert scaled.IMAGE_SCORE.START_ITER == _load(path).IMAGE_SCORE.START_ITER
    assert scaled.SOLVER.MAX_ITER == _load(path).SOLVER.MAX_ITER


# ------------------------------------------------------- the checks catch a wrong schedule

V16 = os.path.join(PAPER_DIR, "faster_rcnn_V16_imagescore.yaml")


@pytest.mark.parametrize("opts, message", [
    (("SOLVER.STEPS", "(6000, 9500)"), "not all before"),        # a step after the round
    (("SOLVER.STEPS", "()"), "no LR step"),
    (("SOLVER.MAX_ITER", "13500"), "not 1/6"),                   # continuation 1/2
    (("SOLVER.MAX_ITER", "18000"), "not 1/6"),                   # continuation = warm-up
    (("SOLVER.MAX_ITER", "20000", "IMAGE_SCORE.START_ITER", "17000"), "not 1/6"),
    (("IMAGE_SCORE.REFRESH_PERIOD", "500"), "selects once"),
], ids=["step-after-round", "no-steps", "half", "equal", "late-round", "refresh"])
def test_check_schedule_rejects(opts, message):
    with pytest.raises(AssertionError, match=message):
        check_schedule(_load(V16, opts), "broken")


@pytest.mark.parametrize("opts, message", [
    (("SOLVER.MAX_ITER", "12250", "IMAGE_SCORE.START_ITER", "10500"), "end of the supervised"),
    (("SOLVER.STEPS", "(5000, 8000)"), "SOLVER.STEPS"),
    (("SOLVER.BASE_LR", "0.02"), "SOLVER.BASE_LR"),
], ids=["round-after-warmup", "other-steps", "other-lr"])
def test_check_warmup_rejects(opts, message):
    supervised = _load(supervised_config(V16))
    with pytest.raises(AssertionError, match=message):
        check_warmup(_load(V16, opts), supervised, "broken")


def test_differences_sees_a_changed_schedule():
    changed = _load(V16, ("SOLVER.MAX_ITER", "12000", "OUTPUT_DIR", "elsewhere"))
    assert differences(_load(V16), changed) == ["SOLVER.MAX_ITER"]


# ------------------------------------------- refreshed rounds under GPU scaling (issue 19.1)
def _rounds_on_every_world_size(cfg, reference, schedule=None):
    """{world size: round iterations} of ``cfg`` scaled to 1..16 processes, each checked to be
    the reference schedule's rounds at the same fractions (within the rounding of START_ITER
    and of k periods: (k + 1) / 2 iterations for round k). ``schedule``: cfg -> iterations
    (default the offline rounds, ``round_iterations``)."""
    from imagescore_det.engine.hook import round_iterations

    schedule = schedule or round_iterations
    expected = schedule(cfg)
    out = {}
    for world in range(1, 17):
        scaled = Trainer.auto_scale_workers(cfg, world)
        rounds = schedule(scaled)
        where = f"{world} processes: rounds {rounds} of {scaled.SOLVER.MAX_ITER}"
        assert len(rounds) == len(expected), where  # no round gained or lost
        factor = reference / world
        for k, (it, it0) in enumerate(zip(rounds, expected)):
            assert abs(it - it0 * factor) <= (k + 1) / 2, where
        assert rounds[-1] < scaled.SOLVER.MAX_ITER, where
        out[world] = rounds
    return out


@pytest.mark.parametrize("path", [p for p in VARIANTS if "V16" in os.path.basename(p)
                                  and "supervised" not in os.path.basename(p)], ids=name)
def test_refresh_rounds_stay_at_their_fractions_on_1_to_16_gpus(path):
    """REFRESH_PERIOD 500 on the VGG16 VOC configs: rounds at 9000, 9500, 10000 of 10500 on 8
    GPUs; the old independent rounding of the period gave 3 GPUs a fourth round at 27999 of
    28000 (and 7 GPUs one at 11998 of 12000)."""
    cfg = _load(path, ("IMAGE_SCORE.REFRESH_PERIOD", "500"))
    from imagescore_det.engine.hook import round_iterations

    assert round_iterations(cfg) == [9000, 9500, 10000]
    rounds = _rounds_on_every_world_size(cfg, REFERENCE_WORLD_SIZE)
    assert rounds[8] == [9000, 9500, 10000]
    assert rounds[3] == [24000, 25333, 26666]  # 28000 iterations; the period 1333.3 -> 1333
    assert rounds[7] == [10286, 10857, 11428]  # 12000 iterations; 571.4 -> 571
    assert rounds[16] == [4500, 4750, 5000]


@pytest.mark.parametrize("start, period, max_iter", [
    (600, 200, 1200), (36, 36, 144), (40, 12, 124), (90, 45, 180), (21, 13, 99)])
def test_refresh_rounds_stay_at_their_fractions_synthetic(start, period, max_iter):
    from imagescore_det.engine import get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH = 4, 8
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, ()
    cfg.IMAGE_SCORE.ENABLED = True
    cfg.IMAGE_SCORE.START_ITER, cfg.IMAGE_SCORE.REFRESH_PERIOD = start, period
    rounds = _rounds_on_every_world_size(cfg, 4)  # periods >= 8: >= 2 iterations on 16
    assert rounds[4] == list(range(start, max_iter, period))


def _teacher_refreshes(cfg):
    """The iterations at which the teacher ranks the pool (``TeacherTrainer.refresh_iterations``
    of a trainer of ``cfg``)."""
    import types

    from imagescore_det.teacher.trainer import TeacherTrainer

    return TeacherTrainer.refresh_iterations(types.SimpleNamespace(
        cfg=cfg, max_iter=cfg.SOLVER.MAX_ITER))


@pytest.mark.parametrize("path, expected", [
    (os.path.join(PAPER_DIR, "faster_rcnn_V16_teacher.yaml"), {
        8: [9000, 9500, 10000], 3: [24000, 25333, 26666], 7: [10286, 10857, 11428],
        16: [4500, 4750, 5000]}),
    (os.path.join(PAPER_DIR, "faster_rcnn_R_50_C4_teacher.yaml"), {
        8: [12000, 12500, 13000, 13500], 3: [32000, 33333, 34666, 35999]})],
    ids=["V16", "R_50_C4"])
def test_teacher_refreshes_stay_at_their_fractions_on_1_to_16_gpus(path, expected):
    """TEACHER.REFRESH 500 on the VOC teacher configs: the rounding of the scaled period alone
    gave 3 GPUs an extra ranking at 27999 of 28000 (V16) and at 37332 of 37333 (R50-C4);
    TEACHER.NUM_REFRESHES, set by the scaling to the count as written, keeps it."""
    cfg = _load(path, ("TEACHER.REFRESH", "500"))
    rounds = _rounds_on_every_world_size(cfg, REFERENCE_WORLD_SIZE, _teacher_refreshes)
    for world, its in expected.items():
        assert rounds[world] == its, world


@pytest.mark.parametrize("start, period, max_iter", [
    (600, 200, 1200), (36, 36, 144), (40, 12, 124), (90, 45, 180), (21, 13, 99)])
def test_teacher_refreshes_stay_at_their_fractions_synthetic(start, period, max_iter):
    from imagescore_det.engine import get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH = 4, 8
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, ()
    cfg.TEACHER.ENABLED = True
    cfg.TEACHER.BURN_IN_ITER, cfg.TEACHER.REFRESH = start, period
    rounds = _rounds_on_every_world_size(cfg, 4, _teacher_refreshes)
    assert rounds[4] == list(range(start, max_iter, period))


def test_every_backbone_has_a_teacher_config():
    assert sorted(_base_of(p) for p in TEACHER_VARIANTS) == sorted(GROUPS)


@pytest.mark.parametrize("path", TEACHER_VARIANTS, ids=name)
def test_teacher_config_runs_the_paper_schedule_online(path):
    """The burn-in is the offline variants' warm-up (the supervised schedule, to its end), the
    online phase the 1/6 after it, so every arm trains as long from the same detector;
    Unbiased Teacher's settings with the keep rate at 16 + 16 images (0.999 at 32 + 32); on
    N GPUs the burn-in stays at the same images seen and the time constant in images too."""
    cfg = _load(path)
    offline = _load(os.path.join(PAPER_DIR, os.path.basename(path).replace("_teacher",
                                                                              "_imagescore")))
    assert cfg.TEACHER.ENABLED and not cfg.IMAGE_SCORE.ENABLED
    assert cfg.TEACHER.BURN_IN_ITER == offline.IMAGE_SCORE.START_ITER
    assert cfg.SOLVER.MAX_ITER == offline.SOLVER.MAX_ITER
    check_warmup(offline, _load(supervised_config(path)), name(path))
    assert all(step < cfg.TEACHER.BURN_IN_ITER for step in cfg.SOLVER.STEPS)
    assert abs(cfg.SOLVER.MAX_ITER - cfg.TEACHER.BURN_IN_ITER * 7 / 6) <= 1
    assert (cfg.TEACHER.SCORE_THRESH, cfg.TEACHER.UNSUP_LOSS_WEIGHT) == (0.7, 2.0)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.TEACHER.UNLABELED_PER_LABELED == 1.0
    assert cfg.TEACHER.EMA_KEEP_RATE == pytest.approx(0.999 ** (16 / 32), abs=1e-6)
    assert cfg.TEACHER.SELECTOR == "none" and cfg.SOLVER.REFERENCE_WORLD_SIZE == 8
    check_config(cfg, name(path))
    for world in WORLD_SIZES:
        scaled = Trainer.auto_scale_workers(cfg, world)
        images = scaled.SOLVER.IMS_PER_BATCH
        assert scaled.TEACHER.BURN_IN_ITER * images == cfg.TEACHER.BURN_IN_ITER * 16
        assert scaled.TEACHER.EMA_KEEP_RATE ** (1 / images) == pytest.approx(
            cfg.TEACHER.EMA_KEEP_RATE ** (1 / 16), rel=1e-12)
