"""Shared fixtures: a tiny synthetic VOC dataset and a tiny VGG16 Faster R-CNN config."""
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "synthetic", "Base-V16tiny-synthetic.yaml")


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory):
    """A tiny synthetic dataset registered as tiny_voc_{labeled,unlabeled,test}.

    Returns a dict: dirname (the VOC2007 directory), meta (the generator's), names.
    """
    from imagescore_det.data import SYNTHETIC_CLASSES, generate_synthetic_voc, register_voc

    root = str(tmp_path_factory.mktemp("tiny_voc"))
    meta = generate_synthetic_voc(root, seed=3, num_labeled=10, num_unlabeled=12, num_test=6,
                                  min_size=72, max_size=96, min_obj_size=16, max_obj_size=36,
                                  max_objects=3)
    dirname = os.path.join(root, "VOC2007")
    names = {}
    for split in ("labeled", "unlabeled", "test"):
        names[split] = f"tiny_voc_{split}"
        register_voc(names[split], dirname, split, 2007, SYNTHETIC_CLASSES)
    return {"dirname": dirname, "meta": meta, "names": names, "root": root}


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """tools/prepare_synthetic_coco.py's layout at tiny size under <tmp>/synthetic_coco."""
    parent = str(tmp_path_factory.mktemp("coco_root"))
    root = os.path.join(parent, "synthetic_coco")
    tool = load_tool("prepare_synthetic_coco")
    paths = tool.write_synthetic_coco(root, seed=3, num_labeled=10, num_unlabeled=12, num_test=6,
                                      min_size=72, max_size=96, min_obj_size=16,
                                      max_obj_size=36, max_objects=3)
    return dict(paths, root=root, parent=parent)


def tiny_cfg_opts(output_dir, max_iter=4):
    """KEY VALUE overrides that make the quickstart model tiny and fast (seconds a run)."""
    return [
        "DATASETS.TRAIN", "('tiny_voc_labeled',)", "DATASETS.TEST", "('tiny_voc_test',)",
        "MODEL.VGG.WIDTH_MULT", "0.0625", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "32",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "INPUT.MIN_SIZE_TRAIN", "(80,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1000",
        # the LR the tiny runs' expectations were set with (not the quickstart's 0.05)
        "SOLVER.BASE_LR", "0.02",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(output_dir), "SEED", "7",
        "MODEL.DEVICE", "cpu",
    ]


@pytest.fixture
def tiny_cfg(tiny_voc, tmp_path):
    """Build a frozen tiny config; extra KEY VALUE overrides may be passed."""
    from imagescore_det.engine import load_config

    def make(*opts, max_iter=4):
        cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path / "out", max_iter) + list(opts))
        cfg.freeze()
        return cfg

    return make


def load_tool(name, folder="tools"):
    """Import ``<folder>/<name>.py`` (tools and benchmarks are scripts, not a package; a
    script finds its folder's helper modules, e.g. ``benchmarks/_bench_cli.py``, as when run)."""
    path = os.path.join(REPO, folder)
    spec = importlib.util.spec_from_file_location(f"_{folder}_{name}",
                                                  os.path.join(path, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, path)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(path)
    return mod
