"""IMAGE_SCORE.SPLIT: a seeded labeled-fraction split of any registered dataset."""
import json
import os

import numpy as np
import pytest

from conftest import tiny_cfg_opts

CLASSES = ["a", "b", "c"]


def _register_memory_dataset(name, dicts, classes=CLASSES):
    """An in-memory dataset (no VOC files): the split works from any dataset's dicts."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(thing_classes=list(classes), evaluator_type="coco",
                                  json_file="/nowhere/instances.json")
    return name


def _dicts(classes_per_image):
    return [{"file_name": f"im{i}.jpg", "image_id": 100 + i, "height": 10, "width": 10,
             "annotations": [{"bbox": [0, 0, 5, 5], "bbox_mode": 0, "category_id": c}
                             for c in cs]}
            for i, cs in enumerate(classes_per_image)]


# --------------------------------------------------------------------------- the split
def test_split_names():
    from imagescore_det.data.split import split_names

    assert split_names("ds", 10.0, 0, 1) == ("ds_sup10_seed1_labeled", "ds_sup10_seed1_unlabeled")
    assert split_names("ds", 0.5, 0, 3)[0] == "ds_sup0.5_seed3_labeled"
    assert split_names("coco_2017_train", 0.0, 40, 2) == (
        "coco_2017_train_n40_seed2_labeled", "coco_2017_train_n40_seed2_unlabeled")


def test_labeled_indices_known_answer():
    from imagescore_det.data.split import labeled_indices

    # round(10 * 30 / 100) = 3 images: the first 3 of default_rng(5)'s permutation, sorted
    perm = np.random.default_rng(5).permutation(10)
    assert labeled_indices(10, 30.0, 0, 5).tolist() == sorted(perm[:3].tolist())
    assert labeled_indices(10, 0.0, 4, 5).tolist() == sorted(perm[:4].tolist())
    assert labeled_indices(200, 10.0, 0, 1).tolist() == labeled_indices(200, 10.0, 0, 1).tolist()
    assert labeled_indices(200, 10.0, 0, 1).tolist() != labeled_indices(200, 10.0, 0, 2).tolist()
    assert len(labeled_indices(200, 12.5, 0, 1)) == 25


@pytest.mark.parametrize("percent,count", [(0.4, 0), (99.6, 0), (0.0, 100), (0.0, 200)])
def test_a_split_without_labeled_or_pool_images_is_refused(percent, count):
    from imagescore_det.data.split import SplitError, labeled_indices

    with pytest.raises(SplitError, match="IMAGE_SCORE.SPLIT.(PERCENT|COUNT).*between 1 and 99"):
        labeled_indices(100, percent, count, 0)


def test_registered_parts_partition_the_source_in_its_order():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from imagescore_det.data.split import labeled_indices, register_split

    source = _register_memory_dataset("mem_split_src", _dicts([[0, 1], [2], [0], [1, 2]] * 5))
    labeled, unlabeled = register_split(source, 25.0, 0, 3)
    assert (labeled, unlabeled) == ("mem_split_src_sup25_seed3_labeled",
                                    "mem_split_src_sup25_seed3_unlabeled")
    lab, unl = DatasetCatalog.get(labeled), DatasetCatalog.get(unlabeled)
    chosen = labeled_indices(20, 25.0, 0, 3).tolist()
    assert [d["image_id"] for d in lab] == [100 + i for i in chosen]
    assert [d["image_id"] for d in unl] == [100 + i for i in range(20) if i not in chosen]
    assert all(d["annotations"] for d in unl)  # the pool keeps its truth (oracle, precision)
    # the classes, not the source's files, go to both parts
    for name in (labeled, unlabeled):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == CLASSES and meta.split_of == source
        assert meta.get("json_file", None) is None and meta.get("evaluator_type", None) is None
    assert register_split(source, 25.0, 0, 3) == (labeled, unlabeled)  # again: a no-op


def test_class_without_labeled_image_is_refused():
    from imagescore_det.data.split import SplitError, labeled_indices, make_split

    # class "c" is in image 7 only
    dicts = _dicts([[0], [1], [0, 1], [0], [1], [0], [1], [2], [0, 1], [1]])
    source = _register_memory_dataset("mem_split_rare", dicts)
    with_c = [s for s in range(40) if 7 in labeled_indices(10, 50.0, 0, s)]
    without_c = [s for s in range(40) if 7 not in labeled_indices(10, 50.0, 0, s)
                 and {0, 1} <= {c for i in labeled_indices(10, 50.0, 0, s)
                                for c in [a["category_id"] for a in dicts[i]["annotations"]]}]
    make_split(source, 50.0, 0, with_c[0])  # only the missing class is refused
    with pytest.raises(SplitError) as info:
        make_split(source, 50.0, 0, without_c[0])
    message = str(info.value)
    assert "['c']" in message and f"SEED {without_c[0]}" in message
    assert "IMAGE_SCORE.SPLIT.PERCENT or COUNT" in message and "IMAGE_SCORE.SPLIT.SEED" in message


def test_class_balance_known_answer():
    from imagescore_det.data.split import make_split

    source = _register_memory_dataset("mem_split_bal", _dicts([[0, 0, 1], [2], [1, 2], [0]]))
    split = make_split(source, 0.0, 2, 0)
    lab = [int(d["image_id"]) - 100 for d in split.labeled]
    per_image = [[0, 0, 1], [2], [1, 2], [0]]
    balance = split.class_balance(CLASSES)
    for c, cls in enumerate(CLASSES):  # brute force
        assert balance[cls] == {
            "labeled_images": sum(c in per_image[i] for i in lab),
            "labeled_boxes": sum(per_image[i].count(c) for i in lab),
            "source_images": sum(c in cs for cs in per_image),
            "source_boxes": sum(cs.count(c) for cs in per_image)}
    assert balance["a"]["source_boxes"] == 3 and balance["a"]["source_images"] == 2


# --------------------------------------------------------------------------- config keys
@pytest.mark.parametrize("opts,message", [
    (["IMAGE_SCORE.SPLIT.PERCENT", "0.0"], r"IMAGE_SCORE.SPLIT.PERCENT is 0.0 .* \(0, 100\)"),
    (["IMAGE_SCORE.SPLIT.PERCENT", "100.0"], r"IMAGE_SCORE.SPLIT.PERCENT is 100.0 .* \(0, 100\)"),
    (["IMAGE_SCORE.SPLIT.PERCENT", "-5.0"], r"IMAGE_SCORE.SPLIT.PERCENT is -5.0 .* \(0, 100\)"),
    (["IMAGE_SCORE.SPLIT.PERCENT", "150.0"], r"IMAGE_SCORE.SPLIT.PERCENT is 150.0 .* \(0, 100\)"),
    (["IMAGE_SCORE.SPLIT.PERCENT", "10.0", "IMAGE_SCORE.SPLIT.COUNT", "3"], "set one of them"),
    (["IMAGE_SCORE.SPLIT.DATASET", "no_such_dataset", "IMAGE_SCORE.SPLIT.PERCENT", "10.0"],
     "'no_such_dataset' .* not a registered dataset"),
    (["IMAGE_SCORE.SPLIT.DATASET", "", "IMAGE_SCORE.SPLIT.PERCENT", "10.0"],
     "IMAGE_SCORE.SPLIT.DATASET is empty"),
])
def test_bad_split_settings_are_config_errors(opts, message, tiny_cfg, tiny_voc):
    from imagescore_det.engine import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_cfg("IMAGE_SCORE.SPLIT.DATASET", "tiny_voc_labeled", *opts)


def test_good_split_settings_register_the_parts(tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    cfg = tiny_cfg("IMAGE_SCORE.SPLIT.DATASET", "tiny_voc_labeled",
                   "IMAGE_SCORE.SPLIT.PERCENT", "60.0", "IMAGE_SCORE.SPLIT.SEED", "4")
    assert "tiny_voc_labeled_sup60_seed4_labeled" in DatasetCatalog.list()
    assert cfg.IMAGE_SCORE.SPLIT.PERCENT == 60.0


# --------------------------------------------------------------------------- trainer start
def _covering_seed(source, percent, count=0, covers=True):
    """A seed whose split of ``source`` labels every class (covers) or misses one."""
    for seed in range(200):
        if _covers(source, percent, seed, count) == covers:
            return seed
    raise AssertionError("no such seed")


def _split_opts(source, percent, seed, pool=True):
    from imagescore_det.data.split import split_names

    labeled, unlabeled = split_names(source, percent, 0, seed)
    opts = ["IMAGE_SCORE.SPLIT.DATASET", source, "IMAGE_SCORE.SPLIT.PERCENT", str(percent),
            "IMAGE_SCORE.SPLIT.SEED", str(seed), "DATASETS.TRAIN", f"('{labeled}',)"]
    if pool:
        opts += ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
                 f"('{unlabeled}',)", "IMAGE_SCORE.START_ITER", "1",
                 "IMAGE_SCORE.SELECTOR", "oracle", "IMAGE_SCORE.EVAL_BEFORE", "False"]
    return opts


def _train(cfg, resume=False):
    from imagescore_det.engine import Trainer

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_split_run_records_ids_and_class_balance(tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    from imagescore_det.data.split import split_names

    source = "tiny_voc_labeled"  # 10 images, 4 classes
    seed = _covering_seed(source, 70.0)
    cfg = tiny_cfg(*_split_opts(source, 70.0, seed), max_iter=2)
    _train(cfg)
    record = json.load(open(os.path.join(cfg.OUTPUT_DIR, "data_split.json")))
    labeled, unlabeled = split_names(source, 70.0, 0, seed)
    assert record["seed"] == seed and record["percent"] == 70.0 and record["source"] == source
    assert record["names"] == {"labeled": labeled, "unlabeled": unlabeled}
    assert record["labeled_ids"] == [d["image_id"] for d in DatasetCatalog.get(labeled)]
    assert record["unlabeled_ids"] == [d["image_id"] for d in DatasetCatalog.get(unlabeled)]
    assert len(record["labeled_ids"]) == 7 and len(record["unlabeled_ids"]) == 3
    assert sum(b["labeled_boxes"] for b in record["class_balance"].values()) == sum(
        len(d["annotations"]) for d in DatasetCatalog.get(labeled))
    # the round's pool is the split's unlabeled part
    manifest = json.load(open(os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1",
                                           "selection.json")))
    assert manifest["pool_size"] == 3 and manifest["unlabeled_datasets"] == [unlabeled]


def test_split_missing_a_class_stops_at_trainer_start(tiny_cfg, tiny_voc):
    from imagescore_det.engine import ConfigError, Trainer

    source = "tiny_voc_labeled"
    seed = _covering_seed(source, 30.0, covers=False)
    cfg = tiny_cfg(*_split_opts(source, 30.0, seed, pool=False))
    with pytest.raises(ConfigError, match="no labeled image.*IMAGE_SCORE.SPLIT.SEED"):
        Trainer(cfg)


def test_resume_with_another_split_seed_is_refused(tiny_cfg, tiny_voc):
    from imagescore_det.engine import ConfigError

    source = "tiny_voc_labeled"
    seeds = [s for s in range(200) if _covers(source, 70.0, s)][:2]
    first = tiny_cfg(*_split_opts(source, 70.0, seeds[0], pool=False), max_iter=2)
    _train(first)
    # the same split resumes ...
    _train(tiny_cfg(*_split_opts(source, 70.0, seeds[0], pool=False), max_iter=3), resume=True)
    # ... another seed does not, before any iteration
    other = tiny_cfg(*_split_opts(source, 70.0, seeds[1], pool=False), max_iter=4)
    metrics = os.path.join(other.OUTPUT_DIR, "metrics.json")
    lines = open(metrics).read().count("total_loss")
    with pytest.raises(ConfigError) as info:
        _train(other, resume=True)
    message = str(info.value)
    assert f"IMAGE_SCORE.SPLIT.SEED is {seeds[1]}" in message
    assert f"SEED {seeds[0]} (recorded in" in message and "data_split.json" in message
    assert open(metrics).read().count("total_loss") == lines
    record = json.load(open(os.path.join(other.OUTPUT_DIR, "data_split.json")))
    assert record["seed"] == seeds[0]  # the record is not overwritten


def _covers(source, percent, seed, count=0):
    from imagescore_det.data.split import SplitError, make_split

    try:
        make_split(source, percent, count, seed)
        return True
    except SplitError:
        return False


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def split_root(tmp_path_factory):
    from imagescore_det.data import generate_synthetic_voc

    root = tmp_path_factory.mktemp("split_datasets")
    generate_synthetic_voc(root / "synthetic_voc", seed=11, num_labeled=12, num_unlabeled=8,
                           num_test=4, min_size=80, max_size=96, min_obj_size=24,
                           max_obj_size=40, max_objects=3)
    return root


def test_split_from_the_command_line(split_root, tmp_path):
    from test_train_net import check, run_train_net

    from imagescore_det.data import datasets_root, register_all_imagescore_datasets
    from imagescore_det.data.split import split_names

    # which seed covers every class, computed on the same files the subprocess reads
    original = datasets_root()
    register_all_imagescore_datasets(str(split_root), replace=True)
    try:
        seed = _covering_seed("synthetic_voc_trainval", 50.0)
    finally:
        register_all_imagescore_datasets(original, replace=True)
    labeled, unlabeled = split_names("synthetic_voc_trainval", 50.0, 0, seed)
    out = tmp_path / "out"
    opts = tiny_cfg_opts(out, max_iter=3) + [
        "DATASETS.TEST", "('synthetic_voc_test',)",
        "IMAGE_SCORE.SPLIT.DATASET", "synthetic_voc_trainval",
        "IMAGE_SCORE.SPLIT.PERCENT", "50.0", "IMAGE_SCORE.SPLIT.SEED", str(seed),
        "DATASETS.TRAIN", f"('{labeled}',)", "IMAGE_SCORE.ENABLED", "True",
        "IMAGE_SCORE.UNLABELED_DATASETS", f"('{unlabeled}',)", "IMAGE_SCORE.START_ITER", "1",
        "IMAGE_SCORE.SELECTOR", "random", "IMAGE_SCORE.EVAL_BEFORE", "False"]
    log = check(run_train_net(split_root, opts))
    assert "class balance of the labeled part" in log
    record = json.loads((out / "data_split.json").read_text())
    assert record["names"]["labeled"] == labeled and len(record["labeled_ids"]) == 10
    assert sorted(record["labeled_ids"] + record["unlabeled_ids"]) == sorted(
        (split_root / "synthetic_voc" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt")
        .read_text().split())
    manifest = json.loads((out / "image_score" / "round_1" / "selection.json").read_text())
    assert manifest["pool_size"] == 10
    # bad input from the command line: a clear message, no traceback, no training
    bad = run_train_net(split_root, tiny_cfg_opts(tmp_path / "bad") + [
        "DATASETS.TRAIN", "('synthetic_voc_labeled',)", "DATASETS.TEST", "('synthetic_voc_test',)",
        "IMAGE_SCORE.SPLIT.DATASET", "synthetic_voc_trainval",
        "IMAGE_SCORE.SPLIT.PERCENT", "100.0"])
    assert bad.returncode != 0
    assert "error: IMAGE_SCORE.SPLIT.PERCENT is 100.0" in bad.stderr
    assert "Traceback" not in bad.stderr
