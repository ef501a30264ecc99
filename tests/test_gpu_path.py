"""The GPU path, tested on CPU: autocast (AMP), host reads per batch, IMAGE_SCORE.BATCH_SIZE,
IMAGE_SCORE.FIT_MAX_IMAGES, and benchmarks/gpu_check.py at toy size (issue items 7 and 8)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO

from imagescore_det.scoring import ImageBatch, ImageScorer


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def one_thread():
    """1 intra-op thread: these tests run many small ops, and on a shared 2-core machine the
    OpenMP barriers of 2 threads made them several times slower (as bench_scoring.py notes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spearman(a, b):
    """Spearman's rank correlation (average ranks for ties), NumPy only."""
    def ranks(values):
        values = np.asarray(values, dtype=np.float64)
        order = np.argsort(values, kind="mergesort")
        sorted_values = values[order]
        out = np.empty(len(values))
        start = 0
        while start < len(values):
            end = start
            while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
                end += 1
            out[order[start:end + 1]] = (start + end) / 2
            start = end + 1
        return out

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def small_conv_net(seed, widths=(8, 16, 16, 32, 32)):
    """Conv+ReLU blocks with two max-pools: every ReLU is a scored layer."""
    torch.manual_seed(seed)
    layers, channels = [], 3
    for index, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        if index in (1, 3):
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers)


def smooth_images(n, seed, size=(40, 48)):
    """Images with spatial structure (upsampled noise) plus pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 3, 8, 8, generator=generator)
    images = nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False)
    return images + 0.3 * torch.randn(n, 3, *size, generator=generator)


def padded_batches(images, batch_size=8):
    """ImageBatches whose images have different valid sizes (crop + pool matmul path)."""
    height, width = images.shape[-2:]
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        sizes = [(height - 4 * (j % 3), width - 6 * (j % 2)) for j in range(len(chunk))]
        out.append(ImageBatch(chunk, valid_sizes=sizes))
    return out


# --------------------------------------------------------------------------- autocast
def test_the_scorers_own_math_does_not_run_under_autocast():
    """Under autocast the crop+pool matmuls would round to bf16; the hooks turn it off.

    The model here is a bare ReLU, which autocast leaves in float32, so the activations are
    the same with and without autocast and the scores must be identical (bit for bit).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the premise: matmul is autocast
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    model = nn.Sequential(nn.ReLU())
    fit, pool = smooth_images(16, 1), smooth_images(24, 2)
    plain = ImageScorer(model, grid=(5, 7)).fit(padded_batches(fit))
    plain_scores = plain.score(padded_batches(pool))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ImageScorer(model, grid=(5, 7)).fit(padded_batches(fit))
        mixed_scores = mixed.score(padded_batches(pool))
    assert torch.equal(plain.thresholds, mixed.thresholds)
    assert all(torch.equal(a, b) for a, b in zip(plain.masks, mixed.masks))
    assert torch.equal(plain_scores, mixed_scores)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_half_activations_compare_exactly_like_their_float32_values(num_classes):
    """bf16/fp16 activations are widened exactly to float32 and compared with the float32
    threshold rounded up, so a model emitting half values scores exactly like one emitting
    the same values in float32 (per-class thresholds included)."""

    class Emit(nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.dtype = dtype
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x.to(self.dtype))

    # multiples of 1/64 below 4 in magnitude: exact in bf16 (8 significant bits) and fp16
    images = (smooth_images(40, 3) * 64).round().clamp(-250, 250) / 64
    labels = [i % 3 for i in range(40)] if num_classes else None
    batches = [ImageBatch(images[i:i + 8], labels=labels[i:i + 8] if labels else None)
               for i in range(0, 40, 8)]
    results = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        scorer = ImageScorer(Emit(dtype), layers=["relu"], grid=(4, 4), num_classes=num_classes)
        scorer.fit(batches)
        results.append((scorer.thresholds, scorer.score(batches)))
    for thresholds, scores in results[1:]:
        assert torch.equal(thresholds, results[0][0])
        assert torch.equal(scores, results[0][1])


def test_bf16_autocast_agrees_with_float32_on_a_small_net():
    """Fit and score under CPU autocast (bf16) vs float32, three random nets.

    Tolerances and why: bf16 keeps 8 significant bits, so each rounding (of a conv's input,
    weights and output; the conv accumulates in float32) moves an activation by <= 2^-9
    (0.2%) relative, a few roundings per layer. Only neurons whose mean (dataset mask) or
    value (image mask) lies within about 1% of t_l can flip. Measured on these nets: the
    thresholds moved <= 0.23% relative, the dataset masks agreed on >= 99.65% of neurons per
    layer, the image-mask sizes moved <= ~2%, Spearman of the scores >= 0.995. The test allows
    1% (thresholds), 99% (dataset masks), 5% (mean image-mask size per layer) and 0.98
    (Spearman): the same order as bf16's precision, with margin for other CPUs' kernels.
    """
    for seed in range(3):
        model = small_conv_net(seed)
        fit, pool = smooth_images(48, 100 + seed), smooth_images(64, 200 + seed)
        full = ImageScorer(model, grid=(6, 6)).fit(padded_batches(fit))
        full_scores, full_details = full.score(padded_batches(pool), details=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = ImageScorer(model, grid=(6, 6)).fit(padded_batches(fit))
            half_scores, half_details = half.score(padded_batches(pool), details=True)
        relative = (half.thresholds - full.thresholds).abs() / full.thresholds.abs()
        assert float(relative.max()) <= 0.01
        for full_mask, half_mask in zip(full.masks, half.masks):
            assert float((full_mask == half_mask).double().mean()) >= 0.99
        sizes_full = full_details["image_mask_size"].mean(0)
        sizes_half = half_details["image_mask_size"].mean(0)
        assert float(((sizes_half - sizes_full).abs() / sizes_full.clamp(min=1)).max()) <= 0.05
        assert spearman(full_scores, half_scores) >= 0.98


# --------------------------------------------------------------------------- host reads
HOST_READS = ("__bool__", "item", "tolist", "cpu", "__int__", "__float__", "numpy")


def count_host_reads(fn, monkeypatch):
    """Calls to tensor methods that read a value back to the host, while ``fn`` runs."""
    calls = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return calls["n"]


@pytest.mark.parametrize("num_classes", [None, 3])
def test_host_reads_per_batch_do_not_grow_with_the_number_of_layers(monkeypatch, num_classes):
    """On a GPU each host read of a device value waits for the queue; reading once per layer
    per batch (the old non-finite checks, per-layer .cpu() of the counts, per-layer label and
    threshold copies) made the hooks sync 13x a batch on VGG16. Now fit and score read the
    device once per batch (the non-finite flags of every layer together), whatever the
    number of layers; what is per layer (means, thresholds) happens once per pass.

    Counted: Python-level calls of tensor methods that read values back (on CPU they are
    cheap, on CUDA each is a sync), per extra batch, for 2 vs 8 scored layers.
    """
    images = smooth_images(48, 5)
    labels = [i % 3 for i in range(48)] if num_classes else None

    def batches(count):
        return [ImageBatch(images[4 * b:4 * b + 4],
                           valid_sizes=[(40, 48), (36, 42), (40, 40), (30, 48)],
                           labels=labels[4 * b:4 * b + 4] if labels else None)
                for b in range(count)]

    per_batch = {}
    for widths in ((8, 8), (8,) * 8):
        model = small_conv_net(0, widths)
        reads = {}
        for count in (3, 9):
            scorer = ImageScorer(model, grid=(4, 4), num_classes=num_classes)
            fit = count_host_reads(lambda: scorer.fit(batches(count)), monkeypatch)
            score = count_host_reads(lambda: scorer.score(batches(count)), monkeypatch)
            reads[count] = np.array([fit, score])
        per_batch[len(widths)] = (reads[9] - reads[3]) / 6
    assert np.array_equal(per_batch[2], per_batch[8]), per_batch
    # fit: the flags' one .cpu() and the bool() of the copy on the host; score: the same,
    # plus per class the label range check (min, max) and the check of the predicted
    # classes, all on host tensors (labels come with the batch)
    assert per_batch[8].tolist() == ([4, 5] if num_classes else [2, 2]), per_batch


def test_non_finite_values_still_name_the_first_bad_layer():
    model = small_conv_net(0, (4, 4, 4))
    scorer = ImageScorer(model, grid=(4, 4)).fit(padded_batches(smooth_images(8, 1)))
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("nan")  # the second conv
    with pytest.raises(FloatingPointError, match="'3'.*non-finite"):
        scorer.score(padded_batches(smooth_images(8, 2)))
    with pytest.raises(FloatingPointError, match="'3'.*non-finite"):
        ImageScorer(model, grid=(4, 4)).fit(padded_batches(smooth_images(8, 1)))


# --------------------------------------------------------------------------- the engine
def _randomize_norm_statistics(model, seed):
    """Random running statistics and affine parameters: an eval-mode BN that is not the
    identity (a fresh BN has mean 0, variance 1, weight 1, bias 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.3 * torch.randn(channels, generator=generator))


def _scores_at_batch_sizes(make_cfg, labeled, pool, norm, sizes=(1, 4), opts=()):
    """Image Scores of ``pool`` at each IMAGE_SCORE.BATCH_SIZE, same model and weights."""
    from imagescore_det.engine import Trainer, selection

    out = {}
    for batch_size in sizes:
        cfg = make_cfg("MODEL.VGG.NORM", norm, "IMAGE_SCORE.BATCH_SIZE", str(batch_size),
                       "IMAGE_SCORE.FIT_MAX_IMAGES", "0", *opts)
        torch.manual_seed(0)
        model = Trainer.build_model(cfg).eval()
        _randomize_norm_statistics(model, 1)
        out[batch_size] = selection.image_scores(cfg, model, labeled, pool)[0]
    return out


@pytest.fixture(scope="module")
def one_size_voc(tmp_path_factory):
    """A tiny synthetic set whose images all have one size (88 x 88): no batch is padded."""
    from detectron2.data import DatasetCatalog

    from imagescore_det.data import SYNTHETIC_CLASSES, generate_synthetic_voc, register_voc

    root = str(tmp_path_factory.mktemp("one_size_voc"))
    generate_synthetic_voc(root, seed=5, num_labeled=8, num_unlabeled=10, num_test=2,
                           min_size=88, max_size=88, min_obj_size=16, max_obj_size=36,
                           max_objects=2)
    for split in ("labeled", "unlabeled"):
        if f"one_size_{split}" not in DatasetCatalog.list():
            register_voc(f"one_size_{split}", os.path.join(root, "VOC2007"), split, 2007,
                         SYNTHETIC_CLASSES)
    return DatasetCatalog.get("one_size_labeled"), DatasetCatalog.get("one_size_unlabeled")


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_batches_of_one_size_score_as_batches_of_one(tiny_cfg, one_size_voc, norm):
    """Without padding, batching changes nothing in eval mode, whatever the norm: BN/FrozenBN
    are a per-channel affine, GN normalizes each image on its own. Left: float32 rounding
    of batched vs single convolutions (atol 1e-4 on scores of size ~1-10)."""
    labeled, pool = one_size_voc
    scores = _scores_at_batch_sizes(tiny_cfg, labeled, pool, norm,
                                    opts=("INPUT.MIN_SIZE_TEST", "88", "INPUT.MAX_SIZE_TEST", "88"))
    np.testing.assert_allclose(scores[4], scores[1], rtol=0, atol=1e-4)


def test_size_order_groups_test_time_sizes_stably(tiny_cfg):
    from imagescore_det.engine.batching import size_order

    cfg = tiny_cfg("INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "1000")
    dicts = [{"height": h, "width": w} for h, w in
             [(375, 500), (500, 375), (375, 500), (333, 500), (500, 375), (375, 500)]]
    # resized: 80x106, 106x80, 80x106, 80x120, 106x80, 80x106
    assert size_order(cfg, dicts) == [0, 2, 5, 3, 1, 4]
    assert size_order(cfg, dicts + [{"file_name": "no size"}]) == list(range(7))


REAL_DIR = os.environ.get("IMAGESCORE_VOC07REAL",
                          os.path.join(os.path.dirname(REPO), "shared", "voc2007-real", "VOC2007"))


@pytest.mark.skipif(not os.path.isdir(REAL_DIR), reason="voc2007-real is not on this machine")
def test_batch_size_4_vs_1_on_real_photos_bn_backbone_vs_gn(tiny_cfg, tiny_voc):
    """Real VOC photos (sizes as they come), a 1/8-width VGG16 at 160 px, random weights with
    random BN statistics; 32 labeled images for the mask, 48 pool images scored.

    With size grouping (engine/batching.py) most batches have no padding; the images in a
    batch straddling two sizes are padded by a few pixels to a few tens. For BN in eval
    mode only their border activations change (measured: Spearman 0.988, median |diff| 0.06
    for a score std of 1.3; before grouping 0.952 and 0.18). GN's statistics see the padding:
    median |diff| 1.35. Tolerances: BN Spearman >= 0.97 and median |diff| <= 0.1 x the
    score std; GN's median |diff| at least 3x BN's. At the paper's 600 px the border is a
    smaller share of each map, so BN's differences are smaller still.
    """
    from detectron2.data import DatasetCatalog

    from imagescore_det.data import VOC_CLASS_NAMES, register_voc

    for split in ("labeled", "unlabeled"):
        if f"gpu_path_real_{split}" not in DatasetCatalog.list():
            register_voc(f"gpu_path_real_{split}", REAL_DIR, split, 2007, VOC_CLASS_NAMES)
    labeled = DatasetCatalog.get("gpu_path_real_labeled")[:32]
    pool = DatasetCatalog.get("gpu_path_real_unlabeled")[:48]
    opts = ("MODEL.VGG.WIDTH_MULT", "0.125", "MODEL.ROI_HEADS.NUM_CLASSES", "20",
            "DATASETS.TRAIN", "('gpu_path_real_labeled',)", "DATASETS.TEST", "()",
            "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "266")
    bn = _scores_at_batch_sizes(tiny_cfg, labeled, pool, "BN", opts=opts)
    gn = _scores_at_batch_sizes(tiny_cfg, labeled, pool, "GN", opts=opts)
    bn_diff = float(np.median(np.abs(bn[4] - bn[1])))
    gn_diff = float(np.median(np.abs(gn[4] - gn[1])))
    assert spearman(bn[1], bn[4]) >= 0.97
    assert bn_diff <= 0.1 * float(np.std(bn[1]))
    assert gn_diff >= 3 * bn_diff


# --------------------------------------------------------------------------- AMP in selection
def test_selection_passes_run_under_autocast_when_amp_is_on(tiny_cfg, tiny_voc):
    """SOLVER.AMP.ENABLED: the fit/score backbone passes and the pseudo-labeling detector
    passes run under autocast on the model's device (bf16 on this CPU); off, they do not.
    The scorer's results stay close to float32's (Spearman >= 0.9 on this 1/16-width random
    net's 12 pool images; the bf16 tolerances are argued in the small-net test above).

    The box head pools with ROIAlignV2 here: torchvision's roi_pool has an autocast wrapper
    on CUDA (it casts to float32) but none on CPU, where bf16 features fail in its kernel;
    roi_align has a bf16 CPU kernel. On a GPU the VGG16 configs' ROIPool is fine."""
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import Trainer, selection

    labeled = DatasetCatalog.get(tiny_voc["names"]["labeled"])
    pool = DatasetCatalog.get(tiny_voc["names"]["unlabeled"])
    results = {}
    for amp in (False, True):
        cfg = tiny_cfg("SOLVER.AMP.ENABLED", str(amp), "IMAGE_SCORE.GRID", "(4, 4)",
                       "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2")
        torch.manual_seed(0)
        model = Trainer.build_model(cfg).eval()
        seen = []
        model.backbone.register_forward_pre_hook(
            lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
        scores, _, _ = selection.image_scores(cfg, model, labeled, pool)
        predictions, _ = selection.predict(cfg, model, pool[:3])
        assert seen and all(flag == amp for flag in seen)
        assert len(seen) == len(labeled) + len(pool) + 3
        for prediction in predictions:
            assert prediction["scores"].dtype == np.float64
            assert np.all(np.isfinite(prediction["boxes"]))
        results[amp] = scores
    assert spearman(results[False], results[True]) >= 0.9


# --------------------------------------------------------------------------- FIT_MAX_IMAGES
def test_fit_subsample_is_seeded_nested_and_0_means_all():
    from imagescore_det.engine.selection import fit_subsample

    dicts = [{"image_id": i} for i in range(50)]
    first = fit_subsample(dicts, 10, seed=3)
    assert first == fit_subsample(dicts, 10, seed=3)  # deterministic
    assert len(first) == 10 and len({d["image_id"] for d in first}) == 10
    ids = [d["image_id"] for d in first]
    assert ids == sorted(ids)  # dataset order
    assert ids != [d["image_id"] for d in fit_subsample(dicts, 10, seed=4)]
    larger = [d["image_id"] for d in fit_subsample(dicts, 25, seed=3)]
    assert set(ids) <= set(larger)  # nested: a larger size only adds images
    assert fit_subsample(dicts, 0, seed=3) == dicts  # 0 = all
    assert fit_subsample(dicts, 50, seed=3) == dicts
    assert fit_subsample(dicts, 80, seed=3) == dicts  # min(N, FIT_MAX_IMAGES)


def _fit_inputs(monkeypatch, cfg, model, labeled, pool, run_seed):
    """(scores, scorer, the dicts the mask was fitted on) of the image_score selector."""
    from imagescore_det.engine import selection
    from imagescore_det.engine.selectors import SelectorContext, rank_pool

    loaded = []
    original = selection._loader
    monkeypatch.setattr(selection, "_loader",
                        lambda c, dicts: loaded.append(list(dicts)) or original(c, dicts))
    ranking = rank_pool("image_score", SelectorContext(cfg=cfg, model=model, pool=pool,
                                                       labeled=lambda: labeled, seed=run_seed))
    monkeypatch.setattr(selection, "_loader", original)
    return ranking.scores, ranking.scorer, loaded[0]


def test_fit_max_images_changes_what_the_mask_is_fitted_on(tiny_cfg, tiny_voc, monkeypatch):
    from detectron2.data import DatasetCatalog

    from imagescore_det.engine import Trainer
    from imagescore_det.engine.selection import fit_subsample

    labeled = DatasetCatalog.get(tiny_voc["names"]["labeled"])  # 10 images
    pool = DatasetCatalog.get(tiny_voc["names"]["unlabeled"])
    torch.manual_seed(0)
    model = Trainer.build_model(tiny_cfg()).eval()

    def run(*opts, run_seed=11):
        return _fit_inputs(monkeypatch, tiny_cfg("IMAGE_SCORE.GRID", "(4, 4)", *opts), model,
                           labeled, pool, run_seed)

    all_scores, all_scorer, all_fitted = run("IMAGE_SCORE.FIT_MAX_IMAGES", "0")
    assert all_fitted == labeled and float(all_scorer.class_counts[0]) == 10
    same, _, _ = run("IMAGE_SCORE.FIT_MAX_IMAGES", "10")
    np.testing.assert_array_equal(same, all_scores)  # >= N: every image, same scores

    scores, scorer, fitted = run("IMAGE_SCORE.FIT_MAX_IMAGES", "4")
    assert fitted == fit_subsample(labeled, 4, 11)  # the run's seed (FIT_SEED -1)
    assert float(scorer.class_counts[0]) == 4
    assert not np.array_equal(scores, all_scores)  # other fit inputs, other mask
    again, _, again_fitted = run("IMAGE_SCORE.FIT_MAX_IMAGES", "4")
    assert again_fitted == fitted
    np.testing.assert_array_equal(again, scores)  # deterministic
    _, _, other_run = run("IMAGE_SCORE.FIT_MAX_IMAGES", "4", run_seed=12)
    assert other_run == fit_subsample(labeled, 4, 12) and other_run != fitted
    _, _, pinned = run("IMAGE_SCORE.FIT_MAX_IMAGES", "4", "IMAGE_SCORE.FIT_SEED", "5")
    assert pinned == fit_subsample(labeled, 4, 5)  # FIT_SEED overrides the run's seed
    _, _, pinned_other_run = run("IMAGE_SCORE.FIT_MAX_IMAGES", "4", "IMAGE_SCORE.FIT_SEED", "5",
                                 run_seed=12)
    assert pinned_other_run == pinned


def test_image_score_seed_moves_the_random_selector_only(tiny_cfg, tiny_voc, monkeypatch):
    """Issue 19.3: IMAGE_SCORE.SEED is the random selector's seed; the mask's fit subsample
    (FIT_SEED -1) follows the run's SEED, so changing IMAGE_SCORE.SEED leaves image_score
    results as they were (the old code fitted on the subsample of IMAGE_SCORE.SEED)."""
    from detectron2.data import DatasetCatalog

    from test_paper_path import _seeded_hook
    from test_selection import SELECT_OPTS

    from imagescore_det.engine import Trainer
    from imagescore_det.engine.selection import fit_subsample
    from imagescore_det.engine.selectors import SelectorContext, rank_pool

    labeled = DatasetCatalog.get(tiny_voc["names"]["labeled"])  # 10 images
    pool = DatasetCatalog.get(tiny_voc["names"]["unlabeled"])
    torch.manual_seed(0)
    model = Trainer.build_model(tiny_cfg()).eval()
    results = {}
    for selector_seed in ("7", "8"):
        cfg = tiny_cfg(*SELECT_OPTS, "SEED", "0", "IMAGE_SCORE.SEED", selector_seed,
                       "IMAGE_SCORE.FIT_MAX_IMAGES", "4")
        seed = _seeded_hook(cfg).seed  # what the round is given as the run's seed
        scores, _, fitted = _fit_inputs(monkeypatch, cfg, model, labeled, pool, seed)
        assert fitted == fit_subsample(labeled, 4, 0), selector_seed  # SEED 0's subsample
        assert fitted != fit_subsample(labeled, 4, int(selector_seed))
        random_scores = rank_pool("random", SelectorContext(
            cfg=cfg, model=None, pool=pool, labeled=list, seed=seed)).scores
        # the random selector's stream: IMAGE_SCORE.SEED * 1000 + round
        np.testing.assert_array_equal(random_scores, np.random.default_rng(
            int(selector_seed) * 1000 + 1).random(len(pool)))
        results[selector_seed] = scores
    np.testing.assert_array_equal(results["7"], results["8"])


def test_fit_max_images_is_checked_and_fingerprinted(tiny_cfg):
    from imagescore_det.engine import ConfigError
    from imagescore_det.engine.config_loading import check_config
    from imagescore_det.engine.consistency import (FINGERPRINT_KEYS, config_fingerprint,
                                                   fingerprint_items)

    for key in ("IMAGE_SCORE.FIT_MAX_IMAGES", "IMAGE_SCORE.FIT_SEED", "SOLVER.AMP.ENABLED"):
        assert key in FINGERPRINT_KEYS
    base = tiny_cfg()
    assert fingerprint_items(base)["IMAGE_SCORE.FIT_MAX_IMAGES"] == repr(500)
    for opts in (("IMAGE_SCORE.FIT_MAX_IMAGES", "0"), ("IMAGE_SCORE.FIT_SEED", "3"),
                 ("SOLVER.AMP.ENABLED", "True")):
        assert config_fingerprint(tiny_cfg(*opts)) != config_fingerprint(base)
    with pytest.raises(ConfigError, match="FIT_MAX_IMAGES"):
        check_config(tiny_cfg("IMAGE_SCORE.FIT_MAX_IMAGES", "-1"))
    with pytest.raises(ConfigError, match="BATCH_SIZE"):
        check_config(tiny_cfg("IMAGE_SCORE.BATCH_SIZE", "0"))


# --------------------------------------------------------------------------- gpu_check.py
def test_gpu_check_runs_at_toy_size_on_cpu(tiny_voc, tmp_path):
    """benchmarks/gpu_check.py --device cpu --tiny: the whole GPU check (train, time both
    selections, the image_score round, evaluate before/after) at toy size, in a subprocess,
    on the tiny synthetic set; every reported field is there."""
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu",
         "--tiny", "--root", tiny_voc["dirname"], "--output", str(out),
         "--work-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["status"] == "ok"
    assert result["total_seconds"] < 60, (result["total_seconds"], wall)
    settings = result["settings"]
    for key in ("device", "gpu", "amp", "amp_dtype", "model", "data", "train_size",
                "ims_per_batch", "warmup_iters", "continue_iters", "selection_batch_size",
                "fit_max_images", "top_fraction", "command"):
        assert key in settings, key
    assert settings["device"] == "cpu" and settings["tiny"] and not settings["amp"]
    assert list(result)[0] == "settings"  # the settings are at the top of the JSON
    summary = result["summary"]
    for key in ("train_images_per_s", "scoring_images_per_s", "full_inference_images_per_s",
                "selection_ratio_image_score_vs_softmax", "selection_ratio_floor"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert summary["peak_gpu_memory_gib"] is None  # no GPU
    for key in ("ap50_before", "ap50_after"):
        assert isinstance(summary[key], float) and 0 <= summary[key] <= 100, key
    selection = result["selection"]
    assert selection["pool_images"] == 12 and selection["fit_images"] == 10
    assert selection["selected"] == 4  # ceil(0.3 * 12)
    voc = selection["at_voc_proportions"]
    assert voc["labeled"] == 5011 and voc["pool"] == 11540
    assert voc["fit_all_labeled"]["ratio"] > voc["fit_max_images_500"]["ratio"]
    assert voc["fit_all_labeled"]["floor"] > voc["fit_max_images_500"]["floor"]
    assert result["round"]["selector"] == "image_score" and result["round"]["num_selected"] == 4
    assert result["train"]["iterations_run"] == 5


# --------------------------------------------------------------------------- bench_selection
def _bench_selection():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import bench_selection
    finally:
        sys.path.pop(0)
    return bench_selection


def test_voc_proportions_and_the_default_rule_known_answers():
    bench = _bench_selection()
    # 1,000 of VOC's 5,011 is as far from VOC's full fit as ~555 of 1,000 from theirs
    assert bench.voc_equivalent_size(1000, 1000) == pytest.approx(555.42, abs=0.01)
    assert bench.voc_equivalent_size(5011, 1000) == 1000
    # fit 0.9 s/image, backbone 0.45 s/image, full inference 1 s/image, 30 pool images
    voc = bench.voc_proportions(t_full=30.0, t_backbone=13.5, t_fit=9.0, ratio=0.8, floor=0.75,
                                labeled=10, pool=30, fit_max_images=500)
    assert voc["fit_all_labeled"]["ratio"] == pytest.approx(0.8 + 0.9 * 5011 / 11540)
    assert voc["fit_all_labeled"]["floor"] == pytest.approx(0.75 + 0.45 * 5011 / 11540)
    assert voc["fit_max_images_500"]["ratio"] == pytest.approx(0.8 + 0.9 * 500 / 11540)
    assert "fit_max_images_0" not in bench.voc_proportions(
        t_full=30.0, t_backbone=13.5, t_fit=9.0, ratio=0.8, floor=0.75, labeled=10, pool=30,
        fit_max_images=0)
    table = [{"size": 100, "spearman_min": 0.985}, {"size": 208, "spearman_min": 0.9945},
             {"size": 357, "spearman_min": 0.997}, {"size": 556, "spearman_min": 0.998}]
    picks, default = bench.pick_default(table, 1000, [250, 500, 1000])
    assert default == 500  # 250 meets 0.99 (at 208) but not with half the images (at 100)
    assert [p["meets_target"] for p in picks] == [True, True, True]
    assert [p["meets_target_with_half_the_images"] for p in picks] == [False, True, True]
    assert picks[2]["measured_size_used"] == 357  # 555.4 is read at or below: conservative
    assert bench.pick_default(table[:1], 1000, [250])[1] == 0  # nothing meets: fit on all
