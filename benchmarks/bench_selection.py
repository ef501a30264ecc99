#!/usr/bin/env python
"""Wall time of Image Score selection relative to softmax selection, on the same images.

Both go through the project's own selection code (imagescore_det.engine.selection), on one
machine, in one process, over the same pool:

* softmax selection = full detector inference on every pool image (``selection.predict``),
  then rank by confidence; the pseudo-labels of the selected images come for free;
* Image Score selection = a backbone-only pass that scores every pool image
  (``ImageScorer.score``), then full inference on the selected ``--top-fraction`` only.
  Fitting the dataset mask (a backbone pass over the labeled set) is reported on its own:
  it is paid once per round whatever the pool size.

Also measured: a plain backbone pass over the pool without the scorer's hooks, so that
the floor of the ratio, ``backbone share + top fraction`` (backbone time / full inference
time + the fraction pseudo-labeled), is reported beside the measured ratio.

The mask fit is counted at VOC's proportions too (5,011 labeled : 11,540 pool, the paper's
VOC07 -> VOC12): fitting on every labeled image adds 0.434 of the pool's backbone pass, on
``IMAGE_SCORE.FIT_MAX_IMAGES`` images FIT_MAX_IMAGES / 11,540 of it; each ratio is reported
beside its floor (backbone share x (1 + fit images / 11,540) + top fraction).

``--fit-subsample`` measures instead how far a mask fitted on a seeded subsample of the
labeled images (``IMAGE_SCORE.FIT_MAX_IMAGES``) is from the mask fitted on all of them: per
subsample size and seed, the per-layer Jaccard of the dataset masks and the Spearman rank
correlation of the pool's scores against the full fit. One backbone pass over the labeled
images accumulates every (size, seed) subsample's sums at once (the subsamples of a seed are
nested), one pass over the pool scores it against every mask; one variant is checked
against ``selection.image_scores`` with that FIT_MAX_IMAGES / FIT_SEED. It picks the
default: the smallest candidate whose VOC-equivalent size here reaches Spearman >= 0.99 for
every seed. VOC-equivalent: a k-image subsample's mean differs from the full mean by
sigma^2 (1/k - 1/N); k of VOC's 5,011 is as far from VOC's full fit as
1 / (1/k - 1/5011 + 1/N) of the N labeled images here (1,000 of 5,011 ~ 556 of 1,000).
Writes benchmarks/results/bench_selection_fit_subsample.json and .png.

Data: ``--root``, a VOC-layout root (default ``$IMAGESCORE_VOC07REAL`` if set, else the real
VOC2007 photos in ../shared/voc2007-real; a VOC2007 directory is accepted too; ``--real-dir``
is its old name): its ``unlabeled`` split is the pool, ``labeled`` fits the mask.
``--data synthetic`` uses the synthetic set instead, ``--root`` then being the datasets root
that holds (or gets) ``synthetic_voc/`` (default ``$DETECTRON2_DATASETS``, else datasets/).
``--seeds``: without ``--fit-subsample``, the seed of the random weights, one timed run per
seed (default 0; several write ``{"seeds": [...], "runs": [one run's JSON per seed]}``); with
it, the FIT_SEEDs of every size (default 0 1 2; the weights stay torch seed 0, so every
subsample is compared with one full fit).
The model is the paper's VGG16 Faster R-CNN (full width, random weights: timing does not
depend on the weights, as the number of proposals per image is fixed by
POST_NMS_TOPK_TEST); ``--config configs/faster_rcnn_R_50_C4_voc07.yaml`` times Detectron2's
R50-C4 instead. Budget: the defaults took 8.5 minutes on 2 CPU cores shared with other jobs
(1 thread, load ~7); ``--fit-subsample`` with its defaults (VGG16 at 1/4 width, 320 px, 1,000
labeled and 500 pool photos) 10 minutes there.

    .venv/bin/python benchmarks/bench_selection.py                       # real data, VGG16
    .venv/bin/python benchmarks/bench_selection.py --pool 8 --labeled 4 --size 160   # smoke
    .venv/bin/python benchmarks/bench_selection.py --fit-subsample       # FIT_MAX_IMAGES
    .venv/bin/python benchmarks/bench_selection.py --fit-subsample --labeled 12 --pool 8 \
        --width 0.0625 --size 96 --sizes 3 6 --seeds 0 1 --output /tmp/fit.json   # smoke
    .venv/bin/python benchmarks/bench_selection.py --config configs/faster_rcnn_R_50_C4_voc07.yaml \
        --pool 20 --labeled 10 --output benchmarks/results/bench_selection_R50C4.json
    .venv/bin/python benchmarks/bench_selection.py --root DIR --seeds 0 1 --output /tmp/sel.json

Writes ``--output`` (default benchmarks/results/bench_selection.json) atomically and prints
a summary.
Timings on a shared machine are noisy: other jobs share the cores (the load is recorded).
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _bench_cli import (per_seed, recorded_path, resolve_voc_root, root_help,  # noqa: E402
                        save_figure)

# torch and Detectron2 are imported where they are used: --help and a bad --root answer
# before their imports (seconds on a loaded machine)
REAL_SPLITS = ("labeled", "unlabeled")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# the paper's VOC07 -> VOC12: VOC2007 trainval labeled, VOC2012 trainval the pool
VOC_LABELED, VOC_POOL = 5011, 11540
SPEARMAN_TARGET = 0.99
DEFAULT_CANDIDATES = (250, 500, 1000)
DEFAULT_RULE = ("the smallest candidate whose Spearman (min over seeds) reaches 0.99 at its "
                "VOC-equivalent size here and also with half the images (margin for trained "
                "weights); an unmeasured size is read at the nearest measured size at or below")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["real", "synthetic"], default="real")
    p.add_argument("--root", "--real-dir", dest="root", default=None,
                   help=root_help(REAL_SPLITS) + "; with --data synthetic: the datasets root "
                   "holding synthetic_voc/ (generated there if absent; default "
                   "$DETECTRON2_DATASETS, else datasets/). --real-dir: its old name")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "faster_rcnn_V16_voc07.yaml"))
    p.add_argument("--fit-subsample", action="store_true",
                   help="measure FIT_MAX_IMAGES subsamples against the full fit (see above)")
    p.add_argument("--width", type=float, default=None,
                   help="MODEL.VGG.WIDTH_MULT (default 1.0; 0.25 with --fit-subsample)")
    p.add_argument("--size", type=int, default=320, help="INPUT.MIN_SIZE_TEST")
    p.add_argument("--pool", type=int, default=None,
                   help="pool images, first N of the split (default 30; 500 with --fit-subsample)")
    p.add_argument("--labeled", type=int, default=None, help="labeled images for the mask "
                   "(default 15; with --fit-subsample 0 = the whole split)")
    p.add_argument("--top-fraction", type=float, default=0.3)
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default); 1 is faster on a shared "
                   "machine, see bench_scoring.py")
    p.add_argument("--sizes", type=int, nargs="+",
                   default=[25, 50, 100, 208, 357, 500, 556, 750],
                   help="--fit-subsample: subsample sizes (below the labeled count); 208, 357 "
                   "and 556 are the VOC-equivalents of 250, 500 and 1,000 of 5,011 at N=1,000")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="the seed of the random weights, one timed run per seed (default 0); "
                   "with --fit-subsample: the FIT_SEEDs per size (default 0 1 2; the weights "
                   "stay torch seed 0)")
    p.add_argument("--candidates", type=int, nargs="+", default=list(DEFAULT_CANDIDATES),
                   help="--fit-subsample: FIT_MAX_IMAGES values the default is picked from")
    p.add_argument("--resummarize", default=None, metavar="JSON",
                   help="--fit-subsample: pick the default and plot again from a JSON it wrote "
                   "(no measuring)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/"
                   "bench_selection.json, or bench_selection_fit_subsample.json)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = p.parse_args(argv)
    fit = args.fit_subsample
    if args.width is None:
        args.width = 0.25 if fit else 1.0
    if args.pool is None:
        args.pool = 500 if fit else 30
    if args.labeled is None:
        args.labeled = 0 if fit else 15
    if args.seeds is None:
        args.seeds = [0, 1, 2] if fit else [0]
    if args.output is None:
        args.output = os.path.join(RESULTS, "bench_selection_fit_subsample.json" if fit
                                   else "bench_selection.json")
    if args.resummarize:
        args.data_dir = None  # no measuring: no data read
    elif args.data == "real":
        args.data_dir = resolve_voc_root(args.root, REAL_SPLITS)
    else:
        args.root = os.path.abspath(args.root or os.environ.get(
            "DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))
        args.data_dir = None  # generated (or found) under args.root by main
    return args


def resummarize(args):
    """Pick the default and plot again from a --fit-subsample JSON (no measuring)."""
    from imagescore_det.utils import atomic_write_json

    with open(args.resummarize) as f:
        result = json.load(f)
    picks, default = pick_default(result["table"], result["labeled_images"], args.candidates)
    result.update(candidates=picks, chosen_default_fit_max_images=default,
                  default_rule=DEFAULT_RULE)
    png = os.path.splitext(args.resummarize)[0] + ".png"
    plot_fit_subsamples(png, result["table"], picks, result["labeled_images"],
                        f"FIT_MAX_IMAGES: {result['labeled_images']} labeled, "
                        f"{result['pool_images']} pool {result['data']} images, "
                        f"{result['model'].split(' Faster')[0]} random init, "
                        f"{result['min_size_test']}px")
    atomic_write_json(args.resummarize, result)
    for pick in picks:
        print(pick)
    print(f"chosen default FIT_MAX_IMAGES: {default}; wrote {args.resummarize} and {png}")


def main(argv=None):
    args = parse_args(argv)
    if args.resummarize:
        return resummarize(args)
    import torch
    from detectron2.data import DatasetCatalog

    import imagescore_det.engine  # noqa: F401  (registers the backbone and the datasets)
    from imagescore_det.data import SYNTHETIC_CLASSES, VOC_CLASS_NAMES, register_voc
    from imagescore_det.engine import Trainer, load_config
    from imagescore_det.utils import atomic_write_json

    if args.data == "real":
        dirname, classes, splits = args.data_dir, VOC_CLASS_NAMES, REAL_SPLITS
    else:
        from imagescore_det.data import generate_synthetic_voc

        dirname = generate_synthetic_voc(os.path.join(args.root, "synthetic_voc"))["dirname"]
        args.data_dir = dirname
        classes, splits = SYNTHETIC_CLASSES, REAL_SPLITS
    names = {}
    for split in splits:
        names[split] = f"bench_{args.data}_{split}"
        register_voc(names[split], dirname, split, 2007, classes)
    labeled = DatasetCatalog.get(names["labeled"])
    labeled = labeled[: args.labeled] if args.labeled > 0 else labeled
    pool = DatasetCatalog.get(names["unlabeled"])[: args.pool]
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config, [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu" if not torch.cuda.is_available() else "cuda",
        "MODEL.VGG.WIDTH_MULT", str(args.width), "MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes)),
        "DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TEST", str(args.size), "INPUT.MAX_SIZE_TEST", str(int(args.size * 5 / 3)),
        "IMAGE_SCORE.GRID", f"({args.grid}, {args.grid})", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
        "DATALOADER.NUM_WORKERS", "0", *args.opts])
    cfg.freeze()
    if args.fit_subsample:
        torch.manual_seed(0)
        return fit_subsample_main(args, cfg, Trainer.build_model(cfg).eval(), labeled, pool)
    results = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        results.append(time_selection(args, cfg, Trainer.build_model(cfg).eval(), labeled, pool,
                                      seed))
    atomic_write_json(args.output, per_seed(results, args.seeds))
    print(f"wrote {args.output}")


def time_selection(args, cfg, model, labeled, pool, seed):
    """Both selections timed on ``model`` (random weights drawn with ``seed``): the run's
    JSON."""
    import torch

    from imagescore_det.engine import selection

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    def backbone_pass():
        from detectron2.data import DatasetMapper

        mapper = DatasetMapper(cfg, is_train=False)
        with torch.no_grad():
            for d in pool:
                model.backbone(model.preprocess_image([mapper(d)]).tensor)

    model_name = (f"VGG16 x{args.width}" if cfg.MODEL.BACKBONE.NAME == "build_vgg16_backbone"
                  else f"{cfg.MODEL.BACKBONE.NAME} R{cfg.MODEL.RESNETS.DEPTH}") + \
        f" Faster R-CNN, {cfg.MODEL.RPN.POST_NMS_TOPK_TEST} proposals"
    print(f"pool {len(pool)} images, labeled {len(labeled)}, {args.data} data, {model_name} "
          f"at {args.size}px, {torch.get_num_threads()} threads, weights seed {seed}", flush=True)
    # warm-up (allocator, first-call overheads) on two images, not timed
    selection.predict(cfg, model, pool[:2], "warm-up")
    _, t_backbone = timed(backbone_pass)
    preds, t_full = timed(lambda: selection.predict(cfg, model, pool, "softmax: infer pool")[0])
    conf = selection.softmax_confidence(preds, cfg.IMAGE_SCORE.BOX_SCORE_THRESH)
    _ = selection.select_top(conf, args.top_fraction)

    from imagescore_det.scoring import ImageScorer

    scorer = ImageScorer(model.backbone, layers=selection.layers_from_cfg(cfg, model.backbone),
                         grid=(args.grid, args.grid))
    order = []
    _, t_fit = timed(lambda: scorer.fit(selection._backbone_batches(
        model, selection._loader(cfg, labeled), order, "fit mask")))
    scores, t_score = timed(lambda: scorer.score(selection._backbone_batches(
        model, selection._loader(cfg, pool), order, "score")).numpy())
    chosen = selection.select_top(scores, args.top_fraction)
    _, t_pseudo = timed(lambda: selection.predict(cfg, model, [pool[i] for i in chosen]))

    k = len(chosen)
    ratio = (t_score + t_pseudo) / t_full
    ratio_fit = (t_fit + t_score + t_pseudo) / t_full
    floor = t_backbone / t_full + k / len(pool)
    voc = voc_proportions(t_full=t_full, t_backbone=t_backbone, t_fit=t_fit, ratio=ratio,
                          floor=floor, labeled=len(labeled), pool=len(pool),
                          fit_max_images=cfg.IMAGE_SCORE.FIT_MAX_IMAGES)
    result = {
        "benchmark": "selection", "data": args.data, "root": recorded_path(args.data_dir),
        "seed": seed,
        "pool_images": len(pool),
        "labeled_images": len(labeled), "selected": k, "top_fraction": args.top_fraction,
        "model": model_name, "config": os.path.relpath(args.config, ROOT),
        "min_size_test": args.size,
        "post_nms_topk_test": cfg.MODEL.RPN.POST_NMS_TOPK_TEST, "grid": args.grid,
        "layers": scorer.layer_names, "device": str(cfg.MODEL.DEVICE),
        "threads": torch.get_num_threads(), "machine": platform.machine(),
        "seconds": {"softmax_full_inference_pool": t_full, "backbone_only_pool": t_backbone,
                    "image_score_fit_labeled": t_fit, "image_score_score_pool": t_score,
                    "image_score_pseudo_label_selected": t_pseudo},
        "ratio_image_score_vs_softmax": ratio,
        "ratio_including_fit": ratio_fit,
        "ratio_including_fit_note": "the fit on this run's labeled images, whose count is "
                                    "not VOC's proportion of the pool; see at_voc_proportions",
        "at_voc_proportions": voc,
        "floor_backbone_share_plus_fraction": floor,
        "backbone_share": t_backbone / t_full,
        "scorer_overhead_vs_backbone": t_score / t_backbone,
        "target_ratio": 0.6,
        "load_average_1min_at_end": os.getloadavg()[0],
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }
    print(f"\nsoftmax selection (full inference on {len(pool)}):   {t_full:8.1f} s")
    print(f"image score: score pool (backbone+hooks)        {t_score:8.1f} s "
          f"(plain backbone {t_backbone:.1f} s, overhead x{t_score / t_backbone:.2f})")
    print(f"image score: pseudo-label the top {k:<4d}          {t_pseudo:8.1f} s")
    print(f"image score: fit mask on {len(labeled)} labeled images    {t_fit:8.1f} s")
    print(f"ratio image score / softmax: {ratio:.3f} (target <= 0.6); with the mask fit "
          f"{ratio_fit:.3f}; floor (backbone share {t_backbone / t_full:.3f} + top fraction "
          f"{k / len(pool):.3f}) = {floor:.3f}")
    for name, entry in voc.items():
        if isinstance(entry, dict):
            print(f"at VOC proportions, fit on {entry['fit_images']} of {VOC_LABELED} labeled "
                  f"for {VOC_POOL} pool: ratio {entry['ratio']:.3f}, floor {entry['floor']:.3f}")
    return result


def voc_proportions(t_full, t_backbone, t_fit, ratio, floor, labeled, pool, fit_max_images):
    """The ratios with the mask fit counted at VOC's proportions (5,011 : 11,540).

    The fit's measured cost per labeled image is charged ``fit_images / 11,540`` times per
    pool image; its floor is a plain backbone pass over those images, ``backbone share x
    fit_images / 11,540``.
    """
    per_pool_image_full = t_full / pool
    fit_per_image = t_fit / labeled
    backbone_share = t_backbone / t_full
    out = {"labeled": VOC_LABELED, "pool": VOC_POOL,
           "fit_seconds_per_labeled_image": fit_per_image,
           "fit_cost_vs_backbone_per_image": fit_per_image / (t_backbone / pool)}
    fits = {"fit_all_labeled": VOC_LABELED}
    if 0 < fit_max_images < VOC_LABELED:
        fits[f"fit_max_images_{fit_max_images}"] = fit_max_images
    for name, fit_images in fits.items():
        share = fit_images / VOC_POOL
        out[name] = {"fit_images": fit_images,
                     "ratio": ratio + fit_per_image * share / per_pool_image_full,
                     "floor": floor + backbone_share * share}
    return out


# --------------------------------------------------------------------------- --fit-subsample
def spearman(a, b):
    """Spearman's rank correlation (average ranks for ties), NumPy only."""
    def ranks(values):
        values = np.asarray(values, dtype=np.float64)
        order = np.argsort(values, kind="mergesort")
        out = np.empty(len(values))
        start = 0
        while start < len(values):
            end = start
            while end + 1 < len(values) and values[order[end + 1]] == values[order[start]]:
                end += 1
            out[order[start:end + 1]] = (start + end) / 2
            start = end + 1
        return out

    if len(a) < 2:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def voc_equivalent_size(fit_images, labeled_here):
    """The subsample size here whose mean is as far from the full fit (variance
    sigma^2 (1/k - 1/N)) as ``fit_images`` of VOC's 5,011 are from VOC's full fit."""
    if fit_images >= VOC_LABELED:
        return labeled_here
    return 1.0 / (1.0 / fit_images - 1.0 / VOC_LABELED + 1.0 / labeled_here)


def measure_fit_subsamples(cfg, model, labeled, pool, sizes, seeds):
    """Masks fitted on every (size, seed) subsample and on all of ``labeled``; pool scores.

    Uses the project's own pieces: ``selection.fit_subsample`` picks each subsample (what
    IMAGE_SCORE.FIT_MAX_IMAGES / FIT_SEED fit on), ``selection._backbone_batches`` feeds the
    images as ``image_scores`` does (batch 1), ``run_pass`` hooks the layers, and the
    thresholds, masks, comparison and overlap are the scorer's (``thresholds_and_masks``,
    ``_float32_at_least``, ``overlap_scores``). One labeled pass and one pool pass in all.

    Returns a dict: layer_names, variants [(size, seed)] with "all" last, masks
    {variant: [bool (neurons,) per layer]}, scores {variant: float64 (pool,)}.
    """
    import torch

    from imagescore_det.engine import selection
    from imagescore_det.scoring import ImageScorer
    from imagescore_det.scoring.kernels import _as_words, _float32_at_least, mask_counts
    from imagescore_det.scoring.passes import run_pass
    from imagescore_det.scoring.scorer import overlap_scores, thresholds_and_masks

    backbone = model.backbone
    settings = cfg.IMAGE_SCORE
    if settings.BATCH_SIZE != 1:
        raise ValueError("measure_fit_subsamples adds images one by one: IMAGE_SCORE.BATCH_SIZE 1")
    layer_names = ImageScorer(backbone, layers=selection.layers_from_cfg(cfg, backbone)).layer_names
    grid = tuple(settings.GRID) if len(settings.GRID) else None
    index_of = {id(d): i for i, d in enumerate(labeled)}
    variants, members = [], []
    for size in sizes:
        for seed in seeds:
            chosen = selection.fit_subsample(labeled, size, seed)
            variants.append((size, seed))
            members.append(np.isin(np.arange(len(labeled)), [index_of[id(d)] for d in chosen]))
    variants.append("all")
    members.append(np.ones(len(labeled), dtype=bool))
    membership = torch.as_tensor(np.stack(members), dtype=torch.float64)  # (V, N)
    sums = [None] * len(layer_names)
    seen = []

    def on_fit_layer(idx, activations, ctx, per_image):
        # batch 1: this image's float64 map added to every variant that holds it, as
        # ImageScorer.fit adds it to its one sum (same order, same float64 additions)
        image = seen[-1][0]  # the labeled index of this batch's one image
        as_float64 = activations.sum(0, dtype=torch.float64)
        if sums[idx] is None:
            sums[idx] = torch.zeros((len(variants), as_float64.numel()), dtype=torch.float64)
        rows = membership[:, image].nonzero()[:, 0]
        sums[idx][rows] += as_float64

    def fit_batches():
        for batch in selection._backbone_batches(model, selection._loader(cfg, labeled), seen,
                                                  "fit every subsample"):
            yield batch

    run_pass(backbone, layer_names, fit_batches(), "fit", on_fit_layer, lambda ctx: None,
             grid=grid, num_classes=None, need_labels=False)
    counts = membership.sum(1)  # images per variant
    thresholds, masks = [], []
    for layer_sum in sums:
        mean = layer_sum / counts.unsqueeze(1)
        per_variant = [thresholds_and_masks(mean[v:v + 1], torch.ones(1, dtype=torch.bool),
                                            settings.THRESHOLD_RATIO) for v in range(len(variants))]
        thresholds.append([float(t[0]) for t, _ in per_variant])
        masks.append(torch.cat([m for _, m in per_variant]))  # (V, neurons)
    # float32 activations are compared with the float32 threshold rounded up (as score does)
    t32 = [torch.tensor([_float32_at_least(t) if math.isfinite(t) else math.inf for t in row],
                        dtype=torch.float32).unsqueeze(1) for row in thresholds]
    inter = [[] for _ in layer_names]
    size_rows = [[] for _ in layer_names]
    order = []

    every_variant = torch.arange(len(variants))
    mask_words = [_as_words(m.contiguous()) for m in masks]

    def on_score_layer(idx, activations, ctx, per_image):
        image_masks = activations[0].unsqueeze(0) >= t32[idx]  # (V, neurons): one row a mask
        sizes, intersections = mask_counts(image_masks.contiguous(), masks[idx],
                                           mask_words[idx], every_variant)
        size_rows[idx].append(sizes)
        inter[idx].append(intersections)

    run_pass(backbone, layer_names, selection._backbone_batches(
        model, selection._loader(cfg, pool), order, "score every mask"), "score",
        on_score_layer, lambda ctx: None, grid=grid, num_classes=None, need_labels=False)
    intersection = torch.stack([torch.stack(rows) for rows in inter], 2).double()  # (P, V, L)
    image_mask_size = torch.stack([torch.stack(rows) for rows in size_rows], 2).double()
    mask_sizes = torch.stack([m.sum(1) for m in masks], 1).double()  # (V, L)
    scores = {}
    in_pool_order = np.argsort(np.asarray([i for batch in order for i in batch]))
    for v, name in enumerate(variants):
        _, _, per_image = overlap_scores(intersection[:, v], image_mask_size[:, v],
                                         mask_sizes[v].expand_as(intersection[:, v]).clone(),
                                         settings.SIMILARITY)
        scores[name] = per_image.numpy()[in_pool_order]
    return {"layer_names": layer_names, "variants": variants,
            "masks": {name: [m[v] for m in masks] for v, name in enumerate(variants)},
            "scores": scores}


def summarize_fit_subsamples(measured, labeled_count, candidates):
    """Per size: Jaccard per layer and Spearman vs the full fit (per seed, min, mean); the
    default picked from ``candidates`` by their VOC-equivalent size here."""
    full_masks, full_scores = measured["masks"]["all"], measured["scores"]["all"]
    rows = {}
    for variant in measured["variants"]:
        if variant == "all":
            continue
        size, seed = variant
        jaccard = []
        for mask, full in zip(measured["masks"][variant], full_masks):
            union = int((mask | full).sum())
            jaccard.append(float((mask & full).sum()) / union if union else 1.0)
        row = rows.setdefault(size, {"size": size, "seeds": [], "spearman": [],
                                     "jaccard_per_layer": []})
        row["seeds"].append(seed)
        row["spearman"].append(spearman(measured["scores"][variant], full_scores))
        row["jaccard_per_layer"].append(jaccard)
    table = []
    for size in sorted(rows):
        row = rows[size]
        per_layer = np.asarray(row["jaccard_per_layer"])  # (seeds, L)
        row.update(spearman_min=float(np.min(row["spearman"])),
                   spearman_mean=float(np.mean(row["spearman"])),
                   jaccard_mean_per_layer=per_layer.mean(0).tolist(),
                   jaccard_min_over_layers_and_seeds=float(per_layer.min()),
                   jaccard_mean=float(per_layer.mean()))
        table.append(row)
    picks, default = pick_default(table, labeled_count, candidates)
    return table, picks, default


def pick_default(table, labeled_count, candidates):
    """The default FIT_MAX_IMAGES: the smallest candidate whose Spearman (min over seeds)
    reaches the target at its VOC-equivalent size here, and still does with half the
    images (a margin for trained weights, whose masks may vary more between images than a
    random network's: twice the variance of the subsample mean needs twice the images).

    A size that was not measured is read at the nearest measured size at or below it (a
    smaller subsample correlates less: conservative); none below = not met.
    """
    measured = {row["size"]: row["spearman_min"] for row in table}
    measured[labeled_count] = 1.0  # the full fit itself

    def spearman_at(size_here):
        below = [size for size in measured if size <= size_here + 0.5]
        return (max(below), measured[max(below)]) if below else (None, float("nan"))

    picks = []
    for candidate in sorted(candidates):
        equivalent = voc_equivalent_size(candidate, labeled_count)
        used, value = spearman_at(equivalent)
        half = voc_equivalent_size(candidate / 2, labeled_count)
        half_used, half_value = spearman_at(half)
        picks.append({"fit_max_images": candidate, "voc_equivalent_size_here": equivalent,
                      "measured_size_used": used, "spearman_min_over_seeds": value,
                      "meets_target": bool(value >= SPEARMAN_TARGET),
                      "half_voc_equivalent_size_here": half,
                      "half_measured_size_used": half_used,
                      "half_spearman_min_over_seeds": half_value,
                      "meets_target_with_half_the_images": bool(half_value >= SPEARMAN_TARGET)})
    meeting = [p["fit_max_images"] for p in picks
               if p["meets_target"] and p["meets_target_with_half_the_images"]]
    return picks, (min(meeting) if meeting else 0)


def plot_fit_subsamples(path, table, picks, labeled_count, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [row["size"] for row in table]
    ax = axes[0]
    for row in table:
        ax.scatter([row["size"]] * len(row["spearman"]), row["spearman"], s=12, color="0.6")
    ax.plot(sizes, [row["spearman_mean"] for row in table], "o-", label="mean over seeds")
    ax.plot(sizes, [row["spearman_min"] for row in table], "s--", label="min over seeds")
    ax.axhline(SPEARMAN_TARGET, color="red", lw=1, label=f"target {SPEARMAN_TARGET}")
    for pick in picks:
        ax.axvline(pick["voc_equivalent_size_here"], color="green", lw=0.8, ls=":")
        ax.annotate(f"{pick['fit_max_images']} of {VOC_LABELED}",
                    (pick["voc_equivalent_size_here"], ax.get_ylim()[1]), rotation=90,
                    fontsize=7, color="green", va="top", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel(f"fit subsample size (of {labeled_count} labeled)")
    ax.set_ylabel("Spearman of pool scores vs full fit")
    ax.legend(fontsize=8, loc="center right")
    ax = axes[1]
    per_layer = np.asarray([row["jaccard_mean_per_layer"] for row in table])
    for layer in range(per_layer.shape[1]):
        ax.plot(sizes, per_layer[:, layer], lw=0.8,
                color=plt.cm.viridis(layer / per_layer.shape[1]))
    ax.plot(sizes, [row["jaccard_mean"] for row in table], "k-o", label="mean over layers")
    ax.set_xscale("log")
    ax.set_xlabel("fit subsample size")
    ax.set_ylabel("dataset-mask Jaccard vs full fit")
    ax.set_title("per layer: dark = first, light = last", fontsize=8)
    for axis in axes:
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xticks(sizes)
        axis.tick_params(axis="x", labelsize=7, labelrotation=45)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def fit_subsample_main(args, cfg, model, labeled, pool):
    import torch

    from imagescore_det.engine import selection
    from imagescore_det.utils import atomic_write_json

    sizes = sorted({size for size in args.sizes if 0 < size < len(labeled)})
    if not sizes:
        sys.exit(f"error: no --sizes below the {len(labeled)} labeled images")
    print(f"fit subsamples {sizes} x seeds {args.seeds} of {len(labeled)} labeled images, "
          f"scoring {len(pool)} pool images; VGG16 x{args.width} at {args.size}px, random "
          f"weights, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    measured = measure_fit_subsamples(cfg, model, labeled, pool, sizes, args.seeds)
    seconds = time.perf_counter() - t0
    # the measurement is FIT_MAX_IMAGES itself: one variant vs selection.image_scores
    check_size, check_seed = sizes[0], args.seeds[0]
    check_pool = pool[:min(len(pool), 40)]
    check_cfg = cfg.clone()
    check_cfg.defrost()
    check_cfg.IMAGE_SCORE.FIT_MAX_IMAGES = check_size
    check_cfg.IMAGE_SCORE.FIT_SEED = check_seed
    check_cfg.freeze()
    direct, _, _ = selection.image_scores(check_cfg, model, labeled, check_pool)
    check_diff = float(np.max(np.abs(direct - measured["scores"][(check_size, check_seed)][
        :len(check_pool)])))
    if check_diff > 1e-9:
        sys.exit(f"error: the measurement differs from selection.image_scores by {check_diff}")
    table, picks, default = summarize_fit_subsamples(measured, len(labeled), args.candidates)
    result = {
        "benchmark": "selection_fit_subsample", "data": args.data, "root": args.data_dir,
        "labeled_images": len(labeled), "pool_images": len(pool),
        "model": f"VGG16 x{args.width} Faster R-CNN backbone, random init (torch seed 0)",
        "weights_note": "random-init weights: these are the masks of an untrained network; "
                        "re-check the choice with trained weights",
        "min_size_test": args.size, "grid": args.grid, "layers": measured["layer_names"],
        "threshold_ratio": cfg.IMAGE_SCORE.THRESHOLD_RATIO,
        "similarity": cfg.IMAGE_SCORE.SIMILARITY, "seeds": args.seeds,
        "spearman_target": SPEARMAN_TARGET,
        "table": [{k: row[k] for k in ("size", "spearman", "spearman_min", "spearman_mean",
                                       "jaccard_mean", "jaccard_min_over_layers_and_seeds",
                                       "jaccard_mean_per_layer")} for row in table],
        "voc_equivalence": "k of VOC's 5,011 ~ 1/(1/k - 1/5011 + 1/N) of the N labeled here "
                           "(equal variance of the subsample mean vs the full mean)",
        "candidates": picks, "chosen_default_fit_max_images": default,
        "default_rule": DEFAULT_RULE,
        "check_vs_image_scores": {"fit_max_images": check_size, "fit_seed": check_seed,
                                  "pool_images": len(check_pool), "max_abs_diff": check_diff},
        "seconds": seconds, "threads": torch.get_num_threads(),
        "load_average_1min_at_end": os.getloadavg()[0], "machine": platform.machine(),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }
    png = os.path.splitext(args.output)[0] + ".png"
    plot_fit_subsamples(png, table, picks, len(labeled),
                        f"FIT_MAX_IMAGES: {len(labeled)} labeled, {len(pool)} pool {args.data} "
                        f"images, VGG16 x{args.width} random init, {args.size}px")
    result["plot"] = os.path.basename(png)
    atomic_write_json(args.output, result)
    print(f"\n{'size':>6} {'Spearman min':>13} {'mean':>7} {'Jaccard mean':>13} {'min':>7}")
    for row in table:
        print(f"{row['size']:>6} {row['spearman_min']:>13.4f} {row['spearman_mean']:>7.4f} "
              f"{row['jaccard_mean']:>13.4f} {row['jaccard_min_over_layers_and_seeds']:>7.4f}")
    for pick in picks:
        print(f"FIT_MAX_IMAGES {pick['fit_max_images']} of {VOC_LABELED} ~ "
              f"{pick['voc_equivalent_size_here']:.0f} here (read at "
              f"{pick['measured_size_used']}): Spearman min {pick['spearman_min_over_seeds']:.4f}"
              f"; half of it ~ {pick['half_voc_equivalent_size_here']:.0f} (read at "
              f"{pick['half_measured_size_used']}): {pick['half_spearman_min_over_seeds']:.4f}")
    print(f"chosen default FIT_MAX_IMAGES: {default} ({seconds:.0f} s; check vs image_scores "
          f"max |diff| {check_diff:.1e})")
    print(f"wrote {args.output} and {png}")


if __name__ == "__main__":
    main()
