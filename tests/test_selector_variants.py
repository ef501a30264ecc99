"""The selector variants: hybrid (confidence filter, image-score rank), image_score_per_class
(per-class masks over the predicted classes) and IMAGE_SCORE.SCORE_RESIZE (fixed resize)."""
import types

import numpy as np
import pytest
import torch

from imagescore_det.engine import selection


def _cfg(*opts):
    from imagescore_det.engine import get_imagescore_cfg

    cfg = get_imagescore_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _prediction(box_scores, classes=None):
    box_scores = np.asarray(box_scores, dtype=np.float64)
    classes = np.zeros(len(box_scores), dtype=np.int64) if classes is None else classes
    return {"boxes": np.zeros((len(box_scores), 4)), "scores": box_scores,
            "classes": np.asarray(classes, dtype=np.int64)}


def _mapped_batches(cfg, model, dicts, labels=None, resize=None):
    """One ImageBatch per image, built by hand (Detectron2's test mapper, or a PIL bilinear
    resize to ``resize`` (h, w) of the decoded image)."""
    from PIL import Image

    from detectron2.data import DatasetMapper
    from detectron2.data.detection_utils import read_image

    from imagescore_det.scoring import ImageBatch

    mapper = DatasetMapper(cfg, is_train=False)
    for i, d in enumerate(dicts):
        if resize is None:
            item = mapper(d)
        else:
            image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
            image = np.asarray(Image.fromarray(image).resize((resize[1], resize[0]),
                                                             Image.BILINEAR))
            item = {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        images = model.preprocess_image([item])
        yield ImageBatch(inputs=images.tensor, valid_sizes=[tuple(images.image_sizes[0])],
                         labels=None if labels is None else [labels[i]])


@pytest.fixture
def tiny_model_data(tiny_cfg, tiny_voc):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import Trainer

    def make(*opts):
        cfg = tiny_cfg(*opts)
        torch.manual_seed(0)
        model = Trainer.build_model(cfg).eval()
        return (cfg, model, DatasetCatalog.get(tiny_voc["names"]["labeled"]),
                DatasetCatalog.get(tiny_voc["names"]["unlabeled"]))

    return make


# --------------------------------------------------------------------------- SCORE_RESIZE
@pytest.mark.parametrize("batch_size", [1, 3])
def test_score_resize_equals_a_resize_by_hand_with_grid_none(tiny_model_data, batch_size):
    from imagescore_det.scoring import ImageScorer

    cfg, model, labeled, pool = tiny_model_data(
        "IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(40, 56)",
        "IMAGE_SCORE.BATCH_SIZE", str(batch_size))
    sizes = {(d["height"], d["width"]) for d in pool}
    assert len(sizes) > 1  # images of different sizes, no grid
    scores, scorer, _ = selection.image_scores(cfg, model, labeled, pool)
    assert scorer.grid is None and np.isfinite(scores).all()
    ref = ImageScorer(model.backbone, layers=r"conv\d_\d", grid=None)
    ref.fit(_mapped_batches(cfg, model, labeled, resize=(40, 56)))
    expected = ref.score(_mapped_batches(cfg, model, pool, resize=(40, 56))).numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scorer.layer_shapes == ref.layer_shapes
    assert scorer.layer_shapes[0][1:] == (40, 56)  # conv1_1 keeps the input size


def test_two_pool_images_of_different_sizes_score_with_resize_and_no_grid(tiny_model_data):
    cfg, model, labeled, pool = tiny_model_data("IMAGE_SCORE.GRID", "()",
                                                "IMAGE_SCORE.SCORE_RESIZE", "(32, 32)")
    by_size = {}
    for d in pool:
        by_size.setdefault((d["height"], d["width"]), d)
    two = list(by_size.values())[:2]
    assert len(two) == 2
    scores, _, _ = selection.image_scores(cfg, model, labeled, two)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    # without the resize the same call cannot line the maps up
    cfg_off, _, _, _ = tiny_model_data("IMAGE_SCORE.GRID", "()")
    with pytest.raises(ValueError, match="grid"):
        selection.image_scores(cfg_off, model, labeled, two)


def test_score_resize_must_fit_a_padding_backbone_without_grid():
    backbone = types.SimpleNamespace(size_divisibility=32)
    cfg = _cfg("IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(48, 64)")
    with pytest.raises(ValueError, match=r"SCORE_RESIZE \(48, 64\) is not a multiple .* 32"):
        selection._check_resize_fits_backbone(cfg, backbone)
    selection._check_resize_fits_backbone(
        _cfg("IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE", "(64, 96)"), backbone)
    selection._check_resize_fits_backbone(  # a grid crops the padding away
        _cfg("IMAGE_SCORE.SCORE_RESIZE", "(48, 64)"), backbone)


def test_only_image_score_selectors_without_resize_need_equal_sizes():
    from imagescore_det.engine.consistency import needs_equal_sizes

    for selector, grid, resize, needed in [
            ("image_score", "()", "()", True),
            ("image_score", "()", "(32, 32)", False),
            ("image_score", "(4, 4)", "()", False), ("softmax", "()", "()", False),
            ("random", "()", "()", False)]:
        cfg = _cfg("IMAGE_SCORE.SELECTOR", selector, "IMAGE_SCORE.GRID", grid,
                   "IMAGE_SCORE.SCORE_RESIZE", resize)
        assert needs_equal_sizes(cfg) == needed, (selector, grid, resize)


def test_grid_none_with_score_resize_passes_the_trainer_check_and_runs_a_round(tiny_cfg):
    """The size check at trainer start refuses GRID () on this data (test_paper_path); with
    SCORE_RESIZE it lets the round run, and the round's mask has the resized map sizes."""
    import os

    from test_selection import SELECT_OPTS, _train

    from imagescore_det.engine import round_files
    from imagescore_det.scoring import ImageScorer

    cfg = tiny_cfg(*SELECT_OPTS, "IMAGE_SCORE.GRID", "()", "IMAGE_SCORE.SCORE_RESIZE",
                   "(32, 40)", max_iter=3)
    trainer = _train(cfg)
    directory = round_files.round_dir(cfg.OUTPUT_DIR, 1)
    record = round_files.read_round(directory)
    assert record.manifest.selector == "image_score" and record.manifest.pool_size == 12
    assert "IMAGE_SCORE.SCORE_RESIZE" in record.manifest.fingerprint_items
    scorer = ImageScorer.load(os.path.join(directory, "mask.pt"), trainer.model.backbone)
    assert scorer.grid is None and scorer.layer_shapes[0][1:] == (32, 40)
