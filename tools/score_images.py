#!/usr/bin/env python
"""Score every image of a registered dataset with a trained detector (one process).

    python tools/score_images.py --config-file CFG --dataset synthetic_voc_unlabeled \
        MODEL.WEIGHTS output/synthetic/imagescore/model_final.pth
    python tools/score_images.py --config-file CFG --dataset NAME --selector softmax \
        [--labeled-datasets A B] [--output DIR] [KEY VALUE ...]

Selectors: every registered one (``imagescore_det/engine/selectors.py``, the same code the
training hook runs), e.g.:

* ``image_score``: fit the dataset mask on the labeled datasets (``--labeled-datasets``;
  default ``IMAGE_SCORE.LABELED_DATASETS``, else ``DATASETS.TRAIN``, as in training), then
  score the dataset's images; only the backbone runs. Scores are <= 0, higher = more typical.
* ``softmax``: full detector inference; the mean score of the boxes that would become
  pseudo-labels (``IMAGE_SCORE.BOX_SCORE_THRESH``).
* ``random``: a random ranking seeded by ``IMAGE_SCORE.SEED``, else ``SEED`` (round 1's stream).

Writes to ``--output`` (default ``OUTPUT_DIR/scores/<dataset>_<selector>``), each file
atomically:

* ``scores.csv``: image_id, file_name, score, rank (1 = highest score; ties by dataset
  order), plus ``domain`` (typical/shifted) for the synthetic set;
* ``mask.pt``: the fitted scorer (image_score; ``ImageScorer.load(path, model.backbone)``);
* ``score_histogram.png``: the top ``IMAGE_SCORE.TOP_FRACTION`` (what a training round would
  pseudo-label) highlighted, the domains outlined when known;
* ``summary.json``: count, mean/min/max score, per-domain mean score, seconds taken.
"""
import argparse
import logging
import os
import sys
import time

import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import imagescore_det.engine  # noqa: F401  (registers the VGG16 backbone and the datasets)
from imagescore_det.engine import (CheckedCheckpointer, CheckpointMismatchError, ConfigError,
                                   Trainer, load_config, round_files)
from imagescore_det.engine.ranking import select_top
from imagescore_det.engine.selectors import SelectorContext, rank_pool, selector_names
from imagescore_det.utils import atomic_write_json, atomic_write_text

logger = logging.getLogger("imagescore_det.score_images")



class ToolError(RuntimeError):
    """A usage problem; the message says how to fix it (printed without a traceback)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="KEY VALUE pairs after the options override the config (e.g. MODEL.WEIGHTS "
               "path/to/model_final.pth MODEL.DEVICE cpu IMAGE_SCORE.BATCH_SIZE 8).")
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="the config the checkpoint was trained with")
    p.add_argument("--dataset", required=True, help="registered dataset whose images are scored")
    p.add_argument("--labeled-datasets", nargs="+", default=None, metavar="NAME",
                   help="datasets the image_score mask is fitted on (default: "
                        "IMAGE_SCORE.LABELED_DATASETS, else DATASETS.TRAIN)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="output directory (default: OUTPUT_DIR/scores/<dataset>_<selector>)")
    p.add_argument("--selector", choices=selector_names(), default="image_score",
                   help="a registered selector (imagescore_det/engine/selectors.py)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- model
def load_model(cfg, config_file):
    """Build the detector of ``cfg`` and load ``cfg.MODEL.WEIGHTS`` into it, strictly."""
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ToolError(
            f"MODEL.WEIGHTS is empty in {config_file}: scoring needs a trained detector. Pass "
            "the checkpoint as an override, e.g. `MODEL.WEIGHTS OUTPUT_DIR/model_final.pth` "
            "(OUTPUT_DIR of the training run).")
    if "://" not in weights and not os.path.isfile(weights):
        raise ToolError(f"Checkpoint MODEL.WEIGHTS={weights} does not exist.")
    model = Trainer.build_model(cfg)
    try:
        CheckedCheckpointer(model, strict=True, config_file=config_file).load(weights)
    except CheckpointMismatchError as e:
        raise ToolError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - unreadable file, not a checkpoint, ...
        raise ToolError(f"Cannot load checkpoint {weights}: {type(e).__name__}: {e}") from e
    model.eval()
    return model


# ----------------------------------------------------------------------------- data
def _dicts(names, what):
    out = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise ToolError(f"{what} dataset {name!r} is not registered. Registered: "
                            f"{', '.join(sorted(DatasetCatalog.list()))}")
        out.extend(DatasetCatalog.get(name))
    if not out:
        raise ToolError(f"{what} dataset(s) {tuple(names)} have no images.")
    return out


def _domains(dicts):
    """Per-image domain (the synthetic set's "typical"/"shifted"), or None when unknown."""
    values = [d.get("domain") for d in dicts]
    return None if any(v is None for v in values) else values


# ----------------------------------------------------------------------------- outputs
def write_outputs(out_dir, cfg, args, dicts, scores, domains, scorer, seconds, scoring_s):
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, round_files.SCORES_CSV),
                      round_files.scores_csv_text(dicts, scores, domains))

    files = ["scores.csv"]
    if scorer is not None:
        scorer.save(os.path.join(out_dir, round_files.MASK))
        files.append(round_files.MASK)

    top = select_top(scores, cfg.IMAGE_SCORE.TOP_FRACTION)
    groups = None
    if domains:
        groups = {dom: np.array([x == dom for x in domains])
                  for dom in ("typical", "shifted") if dom in domains}
    from imagescore_det.evaluation.plots import score_histogram

    files.append(score_histogram(
        os.path.join(out_dir, "score_histogram.png"), scores, top,
        f"{args.selector} scores of {args.dataset} (top {cfg.IMAGE_SCORE.TOP_FRACTION:g} "
        "highlighted)", groups, chosen_label=f"top {cfg.IMAGE_SCORE.TOP_FRACTION:g}"))

    summary = {
        "dataset": args.dataset, "selector": args.selector,
        "weights": cfg.MODEL.WEIGHTS, "config_file": args.config_file,
        "count": len(scores), "mean_score": float(np.mean(scores)),
        "min_score": float(np.min(scores)), "max_score": float(np.max(scores)),
        "top_fraction": cfg.IMAGE_SCORE.TOP_FRACTION, "num_top": int(len(top)),
        "seconds": seconds, "scoring_seconds": scoring_s, "files": files + ["summary.json"],
    }
    if scorer is not None:
        summary["labeled_datasets"] = list(args.labeled_datasets)
        summary["layers"] = list(scorer.layer_names)
    if args.selector == "softmax":
        summary["box_score_thresh"] = cfg.IMAGE_SCORE.BOX_SCORE_THRESH
    if domains:
        summary["per_domain"] = {
            dom: {"count": int(m.sum()), "mean_score": float(np.mean(scores[m])),
                  "in_top": int(np.isin(np.flatnonzero(m), top).sum())}
            for dom, m in groups.items()}
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


# ----------------------------------------------------------------------------- main
def main(args):
    t0 = time.perf_counter()
    cfg = load_config(args.config_file, args.opts)
    if args.labeled_datasets is None:
        args.labeled_datasets = list(cfg.IMAGE_SCORE.LABELED_DATASETS or cfg.DATASETS.TRAIN)
    cfg.freeze()
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "scores",
                                          f"{args.dataset}_{args.selector}")
    pool = _dicts([args.dataset], "The scored")
    model = load_model(cfg, args.config_file)
    logger.info("Scoring %d images of %s with the %s selector", len(pool), args.dataset,
                args.selector)
    ctx = SelectorContext(cfg=cfg, model=model, pool=pool, seed=max(cfg.SEED, 0),
                          labeled=lambda: _dicts(args.labeled_datasets, "The labeled"))
    with torch.no_grad():
        ranking = rank_pool(args.selector, ctx)
    summary = write_outputs(out_dir, cfg, args, pool, ranking.scores, _domains(pool),
                            ranking.scorer, time.perf_counter() - t0, sum(ranking.timing.values()))
    msg = (f"Scored {summary['count']} images of {args.dataset} ({args.selector}) in "
           f"{summary['seconds']:.1f} s: mean {summary['mean_score']:.4f}, min "
           f"{summary['min_score']:.4f}, max {summary['max_score']:.4f}")
    for dom, v in summary.get("per_domain", {}).items():
        msg += f"\n  {dom}: {v['count']} images, mean {v['mean_score']:.4f}, {v['in_top']} in top"
    logger.info("%s\nWrote %s", msg, out_dir)
    return summary


if __name__ == "__main__":
    setup_logger(name="imagescore_det")
    setup_logger()  # detectron2
    try:
        main(parse_args())
    except (ConfigError, ToolError) as e:
        sys.exit(f"error: {e}")
