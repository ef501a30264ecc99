"""Tests of the config: imagescore-det's keys and defaults, shipped configs, load_config errors."""
import glob
import os
import subprocess
import sys

import pytest
import torch

from detectron2.config import get_cfg

from conftest import REPO, TINY_CONFIG
from imagescore_det.config import add_imagescore_config
from imagescore_det.engine import ConfigError, get_imagescore_cfg, load_config
from imagescore_det.engine import config_loading

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))

VGG_DEFAULTS = {"WIDTH_MULT": 1.0, "NORM": "", "OUT_FEATURES": ["conv5_3"]}
IMAGE_SCORE_DEFAULTS = {
    "ENABLED": False, "SELECTOR": "image_score", "UNLABELED_DATASETS": (),
    "LABELED_DATASETS": (), "START_ITER": 1000, "REFRESH_PERIOD": 0, "NUM_ROUNDS": 0,
    "TOP_FRACTION": 0.3,
    "BOX_SCORE_THRESH": 0.5, "MIN_BOXES_PER_IMAGE": 1, "LAYERS": [], "SIMILARITY": "iou",
    "THRESHOLD_RATIO": 0.5, "GRID": (16, 16), "BATCH_SIZE": 1, "SEED": -1,
    "EVAL_PSEUDO_LABELS": True, "PSEUDO_IOU_THRESH": 0.5, "EVAL_BEFORE": True,
    "SCORE_RESIZE": (), "HYBRID_MIN_CONFIDENCE": 0.7, "PSEUDO_CLASS_AGNOSTIC_NMS": False,
    "PSEUDO_NMS_THRESH": 0.7, "BACKFILL": True, "FIT_MAX_IMAGES": 500, "FIT_SEED": -1,
    "ANALYZE_POOL": False, "ON_BAD_IMAGE": "skip", "PAIRED_BASELINE": False,
    "SPLIT.DATASET": "", "SPLIT.PERCENT": 0.0, "SPLIT.COUNT": 0, "SPLIT.SEED": 1,
}
TEACHER_DEFAULTS = {
    "ENABLED": False, "BURN_IN_ITER": 1000, "EMA_KEEP_RATE": 0.9996, "SCORE_THRESH": 0.7,
    "UNSUP_LOSS_WEIGHT": 2.0, "UNLABELED_PER_LABELED": 1.0, "UNSUP_REGRESSION": False,
    "FOCAL_GAMMA": 0.0,
    "SELECTOR": "none", "TOP_FRACTION": 1.0, "REFRESH": 0, "NUM_REFRESHES": 0,
    "PAIRED_BASELINE": False,
    "SUPERVISED_ONLY": False, "TARGETS": "teacher", "RANK_WEIGHTING": False,
}


def flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def base_of(text):
    """A config file text based on the tiny synthetic config (absolute _BASE_)."""
    return f'_BASE_: "{TINY_CONFIG}"\n' + text


# --------------------------------------------------------------------------- defaults


def test_add_imagescore_config_defaults():
    cfg = get_cfg()
    before = flat(cfg)
    add_imagescore_config(cfg)
    after = flat(cfg)
    for k, v in VGG_DEFAULTS.items():
        assert cfg.MODEL.VGG[k] == v, k
    image_score = flat(cfg.IMAGE_SCORE)
    for k, v in IMAGE_SCORE_DEFAULTS.items():
        assert image_score[k] == v, k
        assert type(image_score[k]) is type(v), k  # yacs type-checks overrides by this
    for k, v in TEACHER_DEFAULTS.items():
        assert cfg.TEACHER[k] == v and type(cfg.TEACHER[k]) is type(v), k
    assert cfg.MODEL.ROI_BOX_HEAD.DROPOUT == 0.0
    # Detectron2's own keys and defaults are untouched; only new keys are added
    assert all(after[k] == v for k, v in before.items())
    added = set(after) - set(before)
    # every added key has its default checked above: a key added without one fails here
    assert added == ({f"IMAGE_SCORE.{k}" for k in IMAGE_SCORE_DEFAULTS}
                     | {f"MODEL.VGG.{k}" for k in VGG_DEFAULTS} | {"MODEL.ROI_BOX_HEAD.DROPOUT"}
                     | {f"TEACHER.{k}" for k in TEACHER_DEFAULTS} | {"DATASETS.REGISTER"})
    assert cfg.DATASETS.REGISTER == []  # your own datasets (data/coco.py): none by default
    # the defaults pass the checks
    config_loading.check_config(cfg)
    assert flat(get_imagescore_cfg()) == after


def _readme_config_table():
    """``{key: default}`` of README.md's configuration table (a default that is no Python
    literal, e.g. `image_score`, is the string)."""
    import ast

    lines = open(os.path.join(REPO, "README.md"), encoding="utf-8").read().splitlines()
    start = lines.index("| key | default | meaning |") + 2
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        key, default = (cell.strip().strip("`") for cell in line.split(" | ")[:2])
        key = key.lstrip("| `")
        try:
            table[key] = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            table[key] = default
    return table


def test_readme_documents_every_added_key_with_its_default():
    """The README's table is what users read: one row per key add_imagescore_config adds,
    each with the default the code has."""
    cfg = get_cfg()
    before = set(flat(cfg))
    add_imagescore_config(cfg)
    defaults = {k: v for k, v in flat(cfg).items() if k not in before}
    table = _readme_config_table()
    assert sorted(set(defaults) - set(table)) == [], "keys without a README row"
    assert sorted(set(table) - set(defaults)) == [], "README rows of keys that do not exist"
    for key, value in defaults.items():
        assert table[key] == value and type(table[key]) is type(value), (key, table[key], value)


# --------------------------------------------------------------------------- shipped configs


def test_config_files_found():
    names = {os.path.relpath(f, REPO) for f in CONFIG_FILES}
    assert "configs/Base-RCNN-VGG16.yaml" in names
    assert "configs/synthetic/Base-V16tiny-synthetic.yaml" in names
    assert len(names) >= 7


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_file_loads(path, request, monkeypatch):
    if os.sep + os.path.join("configs", "custom") + os.sep in path:
        # DATASETS.REGISTER reads the COCO jsons' categories when the config is loaded
        monkeypatch.setenv("DETECTRON2_DATASETS", request.getfixturevalue("tiny_coco")["parent"])
    cfg = load_config(path)  # also registers nothing: every dataset named must exist already
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    if cfg.MODEL.BACKBONE.NAME == "build_vgg16_backbone":
        outs = set(cfg.MODEL.VGG.OUT_FEATURES)
        assert set(cfg.MODEL.RPN.IN_FEATURES) <= outs
        assert set(cfg.MODEL.ROI_HEADS.IN_FEATURES) <= outs
        assert cfg.MODEL.ROI_BOX_HEAD.NAME == "VGG16BoxHead"
    if cfg.IMAGE_SCORE.ENABLED:
        assert cfg.IMAGE_SCORE.UNLABELED_DATASETS
        assert not set(cfg.IMAGE_SCORE.UNLABELED_DATASETS) & set(cfg.DATASETS.TEST)
    if not torch.cuda.is_available():
        assert cfg.MODEL.DEVICE == "cpu"


# --------------------------------------------------------------------------- errors


def test_typo_in_config_file(tmp_path):
    path = write(tmp_path, base_of("IMAGE_SCORE:\n  TOP_FRACTON: 0.2\n"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "IMAGE_SCORE.TOP_FRACTON" in msg
    assert path in msg
    assert "Did you mean IMAGE_SCORE.TOP_FRACTION" in msg


def test_typo_in_base_file(tmp_path):
    base = write(tmp_path, "MODEL:\n  VGG:\n    WIDHT_MULT: 0.5\n", "base.yaml")
    child = write(tmp_path, '_BASE_: "base.yaml"\n', "child.yaml")
    with pytest.raises(ConfigError, match=r"MODEL\.VGG\.WIDHT_MULT.*_BASE_.*MODEL\.VGG\.WIDTH_MULT"):
        load_config(child)
    assert os.path.exists(base)


@pytest.mark.parametrize("key,right", [("IMAGE_SCORE.TOP_FRACTON", "IMAGE_SCORE.TOP_FRACTION"),
                                       ("MODEL.VGG.WIDHT_MULT", "MODEL.VGG.WIDTH_MULT"),
                                       ("SOLVER.MAX_ITRE", "SOLVER.MAX_ITER")])
def test_typo_on_command_line(key, right):
    with pytest.raises(ConfigError) as e:
        load_config(TINY_CONFIG, [key, "1"])
    msg = str(e.value)
    assert f"'{key}'" in msg and "command-line" in msg and f"Did you mean {right}" in msg


def test_wrong_value_type_names_key_and_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"IMAGE_SCORE\.TOP_FRACTION.*command-line.*1\.0"):
        load_config(TINY_CONFIG, ["IMAGE_SCORE.TOP_FRACTION", "1"])
    path = write(tmp_path, base_of("MODEL:\n  VGG:\n    WIDTH_MULT: abc\n"))
    with pytest.raises(ConfigError, match=r"MODEL\.VGG\.WIDTH_MULT") as e:
        load_config(path)
    assert path in str(e.value)


def test_odd_number_of_overrides():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(TINY_CONFIG, ["SOLVER.MAX_ITER"])


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="does not exist") as e:
        load_config(path)
    assert path in str(e.value) and "configs/" in str(e.value)


def test_num_classes_mismatch_names_both_and_fix(tmp_path):
    path = write(tmp_path, base_of("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 20\n"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "synthetic_voc_labeled" in msg and "4 classes" in msg
    for c in ("disc", "square", "triangle", "cross"):
        assert c in msg
    assert "NUM_CLASSES is 20" in msg and "MODEL.ROI_HEADS.NUM_CLASSES 4" in msg
    # the same from the command line, and on an unlabeled pool
    with pytest.raises(ConfigError, match="NUM_CLASSES is 3"):
        load_config(TINY_CONFIG, ["MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    with pytest.raises(ConfigError, match="voc_2012_trainval.*20 classes"):
        load_config(TINY_CONFIG, ["IMAGE_SCORE.UNLABELED_DATASETS", "('voc_2012_trainval',)"])


@pytest.mark.parametrize("key", ["DATASETS.TRAIN", "DATASETS.TEST", "IMAGE_SCORE.UNLABELED_DATASETS"])
def test_unregistered_dataset(key):
    with pytest.raises(ConfigError) as e:
        load_config(TINY_CONFIG, [key, "('synthetic_voc_labled',)"])
    msg = str(e.value)
    assert "'synthetic_voc_labled'" in msg and "not registered" in msg
    assert "synthetic_voc_labeled" in msg  # the close registered name is suggested


@pytest.mark.parametrize("value,ok", [("0.0", False), ("1.5", False), ("-0.1", False),
                                      ("1.0", True), ("0.05", True)])
def test_top_fraction_range(value, ok):
    opts = ["IMAGE_SCORE.TOP_FRACTION", value]
    if ok:
        assert load_config(TINY_CONFIG, opts).IMAGE_SCORE.TOP_FRACTION == float(value)
    else:
        with pytest.raises(ConfigError, match=r"TOP_FRACTION.*\(0, 1\]"):
            load_config(TINY_CONFIG, opts)


def test_top_fraction_zero_in_file(tmp_path):
    path = write(tmp_path, base_of("IMAGE_SCORE:\n  TOP_FRACTION: 0.0\n"))
    with pytest.raises(ConfigError, match="TOP_FRACTION is 0.0") as e:
        load_config(path)
    assert path in str(e.value)


@pytest.mark.parametrize("opts,match", [
    (["IMAGE_SCORE.SELECTOR", "imagescore"], "SELECTOR"),
    (["IMAGE_SCORE.SIMILARITY", "dice"], "SIMILARITY"),
    (["IMAGE_SCORE.ENABLED", "True"], "UNLABELED_DATASETS is empty"),
    (["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
      "('synthetic_voc_unlabeled',)", "SOLVER.MAX_ITER", "600", "IMAGE_SCORE.START_ITER",
      "600"], "START_ITER=600"),
    (["IMAGE_SCORE.REFRESH_PERIOD", "-1"], "REFRESH_PERIOD"),
    (["IMAGE_SCORE.NUM_ROUNDS", "-1"], "NUM_ROUNDS is -1"),
    (["IMAGE_SCORE.GRID", "(8,)"], "GRID"),
    (["IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", "1.5"], r"HYBRID_MIN_CONFIDENCE .* \[0, 1\]"),
    (["IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", "-0.1"], r"HYBRID_MIN_CONFIDENCE .* \[0, 1\]"),
])
def test_other_checks(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY_CONFIG, opts)


@pytest.mark.parametrize("value", ["(0, 32)", "(32,)", "(32, 32, 3)", "(32.5, 32)", "(-8, 8)",
                                   "(True, 32)"])
def test_bad_score_resize_names_the_key_and_the_fix(value):
    with pytest.raises(ConfigError, match=r"IMAGE_SCORE.SCORE_RESIZE is .*write \(\) .* \(h, w\), "
                                          r"two positive ints") as e:
        load_config(TINY_CONFIG, ["IMAGE_SCORE.SCORE_RESIZE", value])
    assert "test-time resize" in str(e.value)


def test_score_resize_values_that_load(tmp_path):
    assert load_config(TINY_CONFIG, ["IMAGE_SCORE.SCORE_RESIZE", "(32, 48)"]) \
        .IMAGE_SCORE.SCORE_RESIZE == (32, 48)
    assert load_config(TINY_CONFIG, ["IMAGE_SCORE.SCORE_RESIZE", "()", "IMAGE_SCORE.GRID",
                                     "()"]).IMAGE_SCORE.SCORE_RESIZE == ()
    # a YAML list works as in GRID
    path = write(tmp_path, base_of("IMAGE_SCORE:\n  SCORE_RESIZE: [64, 80]\n  GRID: []\n"))
    cfg = load_config(path)
    assert tuple(cfg.IMAGE_SCORE.SCORE_RESIZE) == (64, 80) and not len(cfg.IMAGE_SCORE.GRID)


def test_selection_keys_are_in_the_resume_fingerprint():
    """A resumed run must not reuse a round made with another hybrid threshold or resize."""
    from imagescore_det.engine.consistency import (FINGERPRINT_KEYS, config_fingerprint,
                                                   fingerprint_items)

    for key in ("IMAGE_SCORE.SCORE_RESIZE", "IMAGE_SCORE.HYBRID_MIN_CONFIDENCE",
                "IMAGE_SCORE.GRID", "IMAGE_SCORE.SELECTOR"):
        assert key in FINGERPRINT_KEYS
    base = load_config(TINY_CONFIG)
    assert fingerprint_items(base)["IMAGE_SCORE.SCORE_RESIZE"] == repr(())
    assert fingerprint_items(base)["IMAGE_SCORE.HYBRID_MIN_CONFIDENCE"] == repr(0.7)
    for opts in (["IMAGE_SCORE.SCORE_RESIZE", "(32, 32)"],
                 ["IMAGE_SCORE.HYBRID_MIN_CONFIDENCE", "0.5"],
                 ["IMAGE_SCORE.SELECTOR", "hybrid"],
                 ["IMAGE_SCORE.SELECTOR", "image_score_per_class"]):
        assert config_fingerprint(load_config(TINY_CONFIG, opts)) != config_fingerprint(base)


# IMAGE_SCORE keys that a saved round does not depend on, so a resume may change them and
# still reuse the round (every other IMAGE_SCORE key must be in FINGERPRINT_KEYS):
ROUND_INDEPENDENT_KEYS = {
    # no round exists when off; a run turning it on resumes into a fresh round folder
    "IMAGE_SCORE.ENABLED",
    # measurement of the pseudo-labels against the pool's truth: which images are selected
    # and the pseudo-labels trained on do not depend on them (a reused round keeps the
    # measurement made when it was selected)
    "IMAGE_SCORE.EVAL_PSEUDO_LABELS", "IMAGE_SCORE.PSEUDO_IOU_THRESH", "IMAGE_SCORE.ANALYZE_POOL",
    # an evaluation before the first round, outside the round folder's selection
    "IMAGE_SCORE.EVAL_BEFORE",
    # what a bad pool image does: "error" stops before any round is saved, "skip" leaves it
    # out; the start-of-run check finds the same images under either setting
    "IMAGE_SCORE.ON_BAD_IMAGE",
    # the paired supervised-only branch, saved beside the rounds, not in them
    "IMAGE_SCORE.PAIRED_BASELINE",
    # the labeled-fraction split: the derived dataset names in DATASETS.TRAIN and
    # UNLABELED_DATASETS (fingerprinted) carry its source, percent or count and seed, and a
    # resume with another split is refused against OUTPUT_DIR/data_split.json
    "IMAGE_SCORE.SPLIT.DATASET", "IMAGE_SCORE.SPLIT.PERCENT", "IMAGE_SCORE.SPLIT.COUNT",
    "IMAGE_SCORE.SPLIT.SEED",
}


def _another_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    return type(value)(list(value) + [value[0] if len(value) else "other"])


def test_every_setting_a_round_depends_on_is_in_the_resume_fingerprint():
    """A key added to IMAGE_SCORE must be listed in FINGERPRINT_KEYS or, with the reason, in
    ROUND_INDEPENDENT_KEYS above; otherwise a resume that changed it would reuse a round made
    without it. And every listed key must move the fingerprint."""
    from imagescore_det.engine.consistency import FINGERPRINT_KEYS, config_fingerprint

    base = load_config(TINY_CONFIG)
    listed = set(FINGERPRINT_KEYS)
    assert len(listed) == len(FINGERPRINT_KEYS)
    every = {f"IMAGE_SCORE.{key}" for key in flat(base.IMAGE_SCORE)}
    missing = sorted(every - listed - ROUND_INDEPENDENT_KEYS)
    assert not missing, (
        f"{missing}: add each to FINGERPRINT_KEYS (imagescore_det/engine/consistency.py) or, if "
        "a saved round does not depend on it, to ROUND_INDEPENDENT_KEYS (tests/test_config.py) "
        "with the reason")
    assert not listed & ROUND_INDEPENDENT_KEYS and ROUND_INDEPENDENT_KEYS <= every
    fingerprint = config_fingerprint(base)
    for key in FINGERPRINT_KEYS:
        cfg = base.clone()
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = _another_value(node[last])
        assert config_fingerprint(cfg) != fingerprint, key


def test_enabled_config_accepted():
    cfg = load_config(TINY_CONFIG, ["IMAGE_SCORE.ENABLED", "True",
                                    "IMAGE_SCORE.UNLABELED_DATASETS", "('synthetic_voc_unlabeled',)",
                                    "IMAGE_SCORE.START_ITER", "599"])
    assert cfg.IMAGE_SCORE.ENABLED and cfg.IMAGE_SCORE.START_ITER == 599
    assert cfg.MODEL.VGG.WIDTH_MULT == 0.125  # from the file, not the default


@pytest.mark.parametrize("cuda,asked,expected", [(False, "cuda", "cpu"), (False, "cuda:1", "cpu"),
                                                 (False, "cpu", "cpu"), (True, "cuda", "cuda")])
def test_device_falls_back_to_cpu(monkeypatch, cuda, asked, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert get_imagescore_cfg().MODEL.DEVICE == "cuda"  # Detectron2's default
    assert load_config(TINY_CONFIG, ["MODEL.DEVICE", asked]).MODEL.DEVICE == expected


def test_train_net_exits_with_config_error(tmp_path):
    path = write(tmp_path, base_of("IMAGE_SCORE:\n  TOP_FRACTON: 0.2\n"))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                        "--config-file", path, "OUTPUT_DIR", str(tmp_path / "out")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Unknown config key 'IMAGE_SCORE.TOP_FRACTON'" in r.stderr
    assert "Did you mean IMAGE_SCORE.TOP_FRACTION" in r.stderr
    assert "Traceback" not in r.stderr  # a message, not a stack trace
    assert not (tmp_path / "out").exists()
