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

Default data: the real VOC2007 photos in ../shared/voc2007-real (its ``unlabeled`` split as
the pool, ``labeled`` for the mask); ``--data synthetic`` uses the synthetic set instead.
The model is the paper's VGG16 Faster R-CNN (full width, random weights: timing does not
depend on the weights, as the number of proposals per image is fixed by
POST_NMS_TOPK_TEST); ``--config configs/faster_rcnn_R_50_C4_voc07.yaml`` times Detectron2's
R50-C4 instead. Budget: the defaults take about 7 minutes on 2 CPU cores.

    .venv/bin/python benchmarks/bench_selection.py                       # real data, VGG16
    .venv/bin/python benchmarks/bench_selection.py --pool 8 --labeled 4 --size 160   # smoke
    .venv/bin/python benchmarks/bench_selection.py --config configs/faster_rcnn_R_50_C4_voc07.yaml \
        --pool 20 --labeled 10 --output benchmarks/results/bench_selection_R50C4.json

Writes benchmarks/results/bench_selection.json (atomically) and prints a summary.
"""
import argparse
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_REAL = os.path.join(os.path.dirname(ROOT), "shared", "voc2007-real", "VOC2007")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["real", "synthetic"], default="real")
    p.add_argument("--real-dir", default=os.environ.get("IMAGESCORE_VOC07REAL", DEFAULT_REAL))
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "faster_rcnn_V16_voc07.yaml"))
    p.add_argument("--width", type=float, default=1.0, help="MODEL.VGG.WIDTH_MULT")
    p.add_argument("--size", type=int, default=320, help="INPUT.MIN_SIZE_TEST")
    p.add_argument("--pool", type=int, default=60, help="pool images (first N of the split)")
    p.add_argument("--labeled", type=int, default=30, help="labeled images for the mask")
    p.add_argument("--top-fraction", type=float, default=0.3)
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "bench_selection.json"))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    return p.parse_args()


def main():
    args = parse_args()
    from detectron2.data import DatasetCatalog

    import imagescore_det.engine  # noqa: F401  (registers the backbone and the datasets)
    from imagescore_det.data import SYNTHETIC_CLASSES, VOC_CLASS_NAMES, register_voc
    from imagescore_det.engine import Trainer, load_config, selection
    from imagescore_det.utils import atomic_write_json

    if args.data == "real":
        if not os.path.isdir(args.real_dir):
            sys.exit(f"error: {args.real_dir} does not exist; pass --real-dir DIR (the "
                     "voc2007-real VOC2007 directory) or --data synthetic")
        dirname, classes, splits = args.real_dir, VOC_CLASS_NAMES, ("labeled", "unlabeled")
    else:
        from imagescore_det.data import generate_synthetic_voc

        root = os.path.join(os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")),
                            "synthetic_voc")
        dirname = generate_synthetic_voc(root)["dirname"]
        classes, splits = SYNTHETIC_CLASSES, ("labeled", "unlabeled")
    names = {}
    for split in splits:
        names[split] = f"bench_{args.data}_{split}"
        register_voc(names[split], dirname, split, 2007, classes)
    labeled = DatasetCatalog.get(names["labeled"])[: args.labeled]
    pool = DatasetCatalog.get(names["unlabeled"])[: args.pool]

    cfg = load_config(args.config, [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu" if not torch.cuda.is_available() else "cuda",
        "MODEL.VGG.WIDTH_MULT", str(args.width), "MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes)),
        "DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TEST", str(args.size), "INPUT.MAX_SIZE_TEST", str(int(args.size * 5 / 3)),
        "IMAGE_SCORE.GRID", f"({args.grid}, {args.grid})", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
        "DATALOADER.NUM_WORKERS", "0", *args.opts])
    cfg.freeze()
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()

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
          f"at {args.size}px, {torch.get_num_threads()} threads", flush=True)
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
    result = {
        "benchmark": "selection", "data": args.data, "pool_images": len(pool),
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
        "floor_backbone_share_plus_fraction": floor,
        "backbone_share": t_backbone / t_full,
        "scorer_overhead_vs_backbone": t_score / t_backbone,
        "target_ratio": 0.6,
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }
    atomic_write_json(args.output, result)
    print(f"\nsoftmax selection (full inference on {len(pool)}):   {t_full:8.1f} s")
    print(f"image score: score pool (backbone+hooks)        {t_score:8.1f} s "
          f"(plain backbone {t_backbone:.1f} s, overhead x{t_score / t_backbone:.2f})")
    print(f"image score: pseudo-label the top {k:<4d}          {t_pseudo:8.1f} s")
    print(f"image score: fit mask on {len(labeled)} labeled images    {t_fit:8.1f} s")
    print(f"ratio image score / softmax: {ratio:.3f} (target <= 0.6); with the mask fit "
          f"{ratio_fit:.3f}; floor (backbone share {t_backbone / t_full:.3f} + top fraction "
          f"{k / len(pool):.3f}) = {floor:.3f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
