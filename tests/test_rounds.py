"""The round's structure: selector registry, ranking rule, round folder schema, checkpoint policy."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from imagescore_det.engine import round_files
from imagescore_det.engine.ranking import rank_order, ranks_of, select_top
from imagescore_det.engine.round_files import RoundError, RoundManifest
from imagescore_det.engine.selectors import (Ranking, config_selector_names, register_selector,
                                             selector_names, unregister_selector)


# --------------------------------------------------------------------------- ranking
def test_ranking_known_answers():
    scores = [0.5, 2.0, 0.5, -1.0, 2.0]
    # descending score; equal scores keep pool order
    assert rank_order(scores).tolist() == [1, 4, 0, 2, 3]
    assert ranks_of(scores).tolist() == [3, 1, 4, 5, 2]
    assert select_top(scores, 0.4).tolist() == [1, 4]
    assert select_top(scores, 0.41).tolist() == [1, 4, 0]  # ceil(2.05) = 3


def test_ranking_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 4, size=int(rng.integers(1, 30))).astype(float)
        brute = [i for _, i in sorted((-s, i) for i, s in enumerate(scores))]
        assert rank_order(scores).tolist() == brute


# --------------------------------------------------------------------------- registry
def test_builtin_selectors_and_none_are_the_config_choices():
    assert set(selector_names()) >= {"image_score", "softmax", "random", "hybrid",
                                     "image_score_per_class"}
    assert "none" not in selector_names() and "none" in config_selector_names()
    with pytest.raises(ValueError, match="reserved"):
        register_selector("none")
    with pytest.raises(ValueError, match="already registered"):
        register_selector("softmax")(lambda ctx: None)


def test_unknown_selector_is_a_config_error_listing_the_registered_ones(tiny_cfg):
    from imagescore_det.engine import ConfigError

    with pytest.raises(ConfigError, match="image_score, softmax, random"):
        tiny_cfg("IMAGE_SCORE.SELECTOR", "by_hand")


def test_a_new_selector_needs_only_the_registry(tiny_cfg, tiny_voc):
    """Registering one function is all it takes to run a round with a new selector."""
    from detectron2.data import DatasetCatalog

    from test_selection import SELECT_OPTS, _train

    calls = []

    @register_selector("last_images_first")
    def last_images_first(ctx):
        calls.append(ctx.round_index)
        return Ranking(np.arange(len(ctx.pool), dtype=float), timing={"by_hand_s": 0.0})

    try:
        cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.SELECTOR", "last_images_first")
        _train(cfg)
    finally:
        unregister_selector("last_images_first")
    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    record = round_files.read_round(round_files.round_dir(cfg.OUTPUT_DIR, 1))
    k = int(np.ceil(0.3 * len(pool)))
    assert calls == [1]
    assert record.manifest.selector == "last_images_first" and record.manifest.num_selected == k
    assert {r["file_name"] for r in record.scores if r["selected"] == "1"} == {
        d["file_name"] for d in pool[-k:]}
    assert "by_hand_s" in record.manifest.timing


def test_selectors_say_whether_they_run_the_image_score_passes():
    """GRID / SCORE_RESIZE and the equal-size check follow this flag, not selector names."""
    from imagescore_det.engine.selectors import uses_image_score_passes

    assert {name for name in selector_names() if uses_image_score_passes(name)} >= {
        "image_score", "hybrid", "image_score_per_class"}
    assert not uses_image_score_passes("softmax") and not uses_image_score_passes("random")

    @register_selector("masked_by_hand", image_score_passes=True)
    def masked_by_hand(ctx):
        return Ranking(np.zeros(len(ctx.pool)))

    try:
        assert uses_image_score_passes("masked_by_hand")
    finally:
        unregister_selector("masked_by_hand")
    assert not uses_image_score_passes("masked_by_hand")


def test_a_selector_with_the_wrong_number_of_scores_fails(tiny_cfg):
    from imagescore_det.engine.selectors import SelectorContext, rank_pool

    @register_selector("too_short")
    def too_short(ctx):
        return Ranking(np.zeros(len(ctx.pool) - 1))

    try:
        ctx = SelectorContext(cfg=None, model=None, pool=[{}] * 3, labeled=list)
        with pytest.raises(ValueError, match=r"returned \(2,\) scores for a pool of 3"):
            rank_pool("too_short", ctx)
    finally:
        unregister_selector("too_short")


# --------------------------------------------------------------------------- round folder
def _manifest(**kw):
    fields = dict(round=1, iteration=5, selector="random", dataset_name="pool_pseudo_r1",
                  fingerprint="f", unlabeled_datasets=["pool"], thing_classes=["a", "b"],
                  pool_size=3, num_selected=2, num_pseudo_images=1, num_dropped=1,
                  num_pseudo_boxes=1, boxes_per_image=0.5, selected_score_mean=0.5,
                  selected_score_min=0.2, pool_score_mean=0.4, per_class_boxes={"a": 0, "b": 1},
                  timing={"selection_total_s": 0.1})
    fields.update(kw)
    return RoundManifest(**fields)


class _Result:
    """The fields of a RoundResult that write_round reads."""

    def __init__(self, tmp_path):
        from detectron2.structures import BoxMode

        self.pool = [{"image_id": f"im{i}", "file_name": str(tmp_path / f"im{i}.jpg"),
                      "domain": dom} for i, dom in enumerate(["typical", "shifted", "shifted"])]
        self.scores = np.array([0.2, 0.8, 0.2])
        self.chosen = np.array([1, 0])
        self.examined = np.array([1, 0])
        self.box_counts = [1, 0]
        self.trained = [True, False]
        self.quality = [(1, 0, 2), (0, 0, 1)]
        self.domains = [d["domain"] for d in self.pool]
        self.scorer = None
        self.pseudo = [dict(self.pool[1], annotations=[
            {"bbox": [1.0, 2.0, 3.0, 4.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
             "score": 0.9}])]


def test_round_folder_round_trip(tmp_path):
    result = _Result(tmp_path)
    directory = str(tmp_path / "round_1")
    manifest = _manifest()
    round_files.write_round(directory, result, manifest, plots=False)
    assert sorted(os.listdir(directory)) == ["pseudo_dataset.json", "scores.csv", "selection.json"]
    record = round_files.read_round(directory)
    assert record.manifest == manifest and record.manifest.format_version == 2
    assert record.pseudo == result.pseudo
    rows = record.scores
    assert [r["image_id"] for r in rows] == ["im0", "im1", "im2"]
    assert [r["rank"] for r in rows] == [2, 1, 3]  # tie between im0 and im2: pool order
    assert [r["selected"] for r in rows] == ["1", "1", "0"]
    assert [r["backfilled"] for r in rows] == ["0", "0", "0"]
    assert [r["pseudo_boxes"] for r in rows] == ["0", "1", ""]
    assert [r["trained"] for r in rows] == ["0", "1", ""]
    assert [r["true_positives"] for r in rows] == ["0", "1", ""]
    assert [r["true_boxes"] for r in rows] == ["1", "2", ""]
    assert [r["domain"] for r in rows] == ["typical", "shifted", "shifted"]
    on_disk = json.load(open(os.path.join(directory, "selection.json")))
    assert "pseudo_precision" not in on_disk  # unmeasured optional fields are left out


def test_version_1_manifest_is_read(tmp_path):
    manifest = _manifest()
    old = manifest.to_dict()
    for key in ("format_version", "num_backfilled", "num_background_images"):
        del old[key]
    old["num_dropped_empty"] = old.pop("num_dropped")
    os.makedirs(tmp_path / "r")
    json.dump(old, open(tmp_path / "r" / "selection.json", "w"))
    read = round_files.read_manifest(str(tmp_path / "r"))
    assert read.format_version == 1 and read.num_selected == manifest.num_selected
    assert read.num_dropped == manifest.num_dropped and read.num_backfilled == 0


@pytest.mark.parametrize("content,message", [
    ("{not json", "Cannot read the round manifest"),
    ("[1, 2]", "is not a JSON object"),
    (json.dumps(dict(_manifest().to_dict(), format_version=99)), "round format 99"),
    (json.dumps(dict(_manifest().to_dict(), extra_key=1)), r"unknown keys \['extra_key'\]"),
    (json.dumps({k: v for k, v in _manifest().to_dict().items() if k != "pool_size"}),
     r"missing keys \['pool_size'\]"),
])
def test_foreign_or_edited_manifest_is_refused(tmp_path, content, message):
    directory = tmp_path / "round_1"
    os.makedirs(directory)
    (directory / "selection.json").write_text(content)
    with pytest.raises(RoundError, match=message) as e:
        round_files.read_manifest(str(directory))
    assert str(directory) in str(e.value) and "Delete" in str(e.value)


def test_incomplete_round_reads_as_none(tmp_path):
    assert round_files.read_manifest(str(tmp_path)) is None
    with pytest.raises(RoundError, match="incomplete round"):
        round_files.read_round(str(tmp_path))


# --------------------------------------------------------------------------- domains
def test_synthetic_dicts_carry_their_domain(tiny_voc):
    from detectron2.data import DatasetCatalog

    pool = DatasetCatalog.get("tiny_voc_unlabeled")
    domains = tiny_voc["meta"]["domains"]
    assert [d["domain"] for d in pool] == [domains[d["image_id"]] for d in pool]
    assert {"typical", "shifted"} >= {d["domain"] for d in pool}


def test_non_synthetic_dicts_have_no_domain(tiny_voc, tmp_path):
    import shutil

    from detectron2.data import DatasetCatalog

    from imagescore_det.data import SYNTHETIC_CLASSES, register_voc

    copy = tmp_path / "VOC2007"
    shutil.copytree(tiny_voc["dirname"], copy)
    os.remove(copy / "synthetic_meta.json")
    register_voc("plain_voc_test", str(copy), "test", 2007, SYNTHETIC_CLASSES)
    assert all("domain" not in d for d in DatasetCatalog.get("plain_voc_test"))


# --------------------------------------------------------------------------- checkpoints
class _Net(nn.Module):
    def __init__(self, head_out=3):
        super().__init__()
        self.backbone = nn.Linear(2, 4)
        self.head = nn.Linear(4, head_out)


def _save(model, path, **extra):
    state = {k: v for k, v in model.state_dict().items()}
    state.update(extra)
    torch.save({"model": state}, path)
    return str(path)


def test_checkpoint_policy_strict_and_lenient(tmp_path, caplog):
    from imagescore_det.engine import CheckedCheckpointer, CheckpointMismatchError

    other_head = _save(_Net(head_out=5), tmp_path / "head.pth")
    # lenient (fine-tuning): a head of another size loads with Detectron2's warning
    CheckedCheckpointer(_Net()).load(other_head)
    # strict (scoring a trained detector): refused, naming the tensor and both shapes
    with pytest.raises(CheckpointMismatchError, match=r"head.weight: shape \(5, 4\) in the "
                                                      r"checkpoint, \(3, 4\) in the model"):
        CheckedCheckpointer(_Net(), strict=True, config_file="cfg.yaml").load(other_head)

    other_backbone = _Net()
    other_backbone.backbone = nn.Linear(2, 6)
    other_backbone.head = nn.Linear(6, 3)
    path = _save(other_backbone, tmp_path / "backbone.pth")
    for strict in (False, True):
        with pytest.raises(CheckpointMismatchError, match="backbone"):
            CheckedCheckpointer(_Net(), strict=strict).load(path)

    partial = _Net()
    state = {k: v for k, v in partial.state_dict().items() if not k.startswith("head.")}
    torch.save({"model": state}, tmp_path / "partial.pth")
    CheckedCheckpointer(_Net()).load(str(tmp_path / "partial.pth"))  # an ImageNet-style init
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint: head.weight, head.bias"):
        CheckedCheckpointer(_Net(), strict=True).load(str(tmp_path / "partial.pth"))

    extra = _save(_Net(), tmp_path / "extra.pth", unused=torch.zeros(1))
    model = _Net()
    CheckedCheckpointer(model, strict=True).load(extra)  # unused keys only warn
    nothing = tmp_path / "nothing.pth"
    torch.save({"model": {"foo": torch.zeros(1)}}, nothing)
    with pytest.raises(CheckpointMismatchError, match="none of its tensors"):
        CheckedCheckpointer(_Net()).load(str(nothing))


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    from imagescore_det.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / "a.json"), "{}")
        plain = tmp_path / "b.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644
