#!/usr/bin/env python
"""Score every image of a registered dataset with a trained detector (one process).

    python tools/score_images.py --config-file CFG --dataset synthetic_voc_unlabeled \
        MODEL.WEIGHTS output/synthetic/imagescore/model_final.pth
    python tools/score_images.py --config-file CFG --dataset NAME --selector softmax \
        [--labeled-datasets A B] [--output DIR] [KEY VALUE ...]

Selectors (the same code the training hook runs, imagescore_det.engine.selection):

* ``image_score``: fit the dataset mask on the labeled datasets (``--labeled-datasets``;
  default ``IMAGE_SCORE.LABELED_DATASETS``, else ``DATASETS.TRAIN``, as in training), then
  score the dataset's images; only the backbone runs. Scores are <= 0, higher = more typical.
* ``softmax``: full detector inference; the mean score of the boxes that would become
  pseudo-labels (``IMAGE_SCORE.BOX_SCORE_THRESH``).

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
import csv
import io
import logging
import os
import sys
import time

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import imagescore_det.engine  # noqa: F401  (registers the VGG16 backbone and the datasets)
from imagescore_det.data import dataset_domains
from imagescore_det.engine import ConfigError, Trainer, load_config
from imagescore_det.engine import selection
from imagescore_det.utils import atomic_write_json, atomic_write_text

logger = logging.getLogger("imagescore_det.score_images")

SELECTORS = ("image_score", "softmax")


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
    p.add_argument("--selector", choices=SELECTORS, default="image_score")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- model
class _RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps what did not fit instead of only logging it."""

    incompatible = None

    def _log_incompatible_keys(self, incompatible):
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def _config_hint(weights, config_file):
    saved = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    hint = (f"Pass --config-file the config that trained {weights} (with the same KEY VALUE "
            "overrides)")
    if os.path.isfile(saved):
        hint += f"; the training run saved it as {saved}"
    return hint + f", or MODEL.WEIGHTS a checkpoint trained with {config_file}."


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
    ckpt = _RecordingCheckpointer(model)
    try:
        ckpt.load(weights)
    except Exception as e:  # noqa: BLE001 - unreadable file, not a checkpoint, ...
        raise ToolError(f"Cannot load checkpoint {weights}: {type(e).__name__}: {e}") from e
    bad = ckpt.incompatible
    # a key whose shape differs is dropped from the checkpoint, so it is also "missing"
    missing = [] if bad is None else [
        k for k in bad.missing_keys if k not in {s[0] for s in bad.incorrect_shapes}]
    if bad is not None and (bad.incorrect_shapes or missing):
        lines = [f"Checkpoint {weights} does not fit the model built from {config_file}:"]
        for k, shape_ckpt, shape_model in bad.incorrect_shapes[:8]:
            lines.append(f"  {k}: shape {tuple(shape_ckpt)} in the checkpoint, "
                         f"{tuple(shape_model)} in the model")
        if len(bad.incorrect_shapes) > 8:
            lines.append(f"  ... {len(bad.incorrect_shapes)} shape mismatches in all")
        if missing:
            shown = ", ".join(missing[:8])
            more = f" ... ({len(missing)} in all)" if len(missing) > 8 else ""
            lines.append(f"  missing from the checkpoint: {shown}{more}")
        lines.append(_config_hint(weights, config_file))
        raise ToolError("\n".join(lines))
    if bad is not None and bad.unexpected_keys:
        logger.warning("Checkpoint %s has %d keys the model does not use (e.g. %s)", weights,
                       len(bad.unexpected_keys), bad.unexpected_keys[0])
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


def _domains(name, dicts):
    """Per-image domain ("typical"/"shifted") of a synthetic dataset, or None."""
    try:
        by_id = dataset_domains(name)
    except (KeyError, OSError, ValueError):
        return None
    if not by_id:
        return None
    doms = [by_id.get(str(d.get("image_id"))) for d in dicts]
    return doms if all(x is not None for x in doms) else None


def ranks_of(scores):
    """1 = highest score; ties by dataset order (the order select_top picks them in)."""
    n = len(scores)
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)))] = np.arange(1, n + 1)
    return ranks


# ----------------------------------------------------------------------------- outputs
def write_outputs(out_dir, cfg, args, dicts, scores, domains, scorer, seconds, scoring_s):
    os.makedirs(out_dir, exist_ok=True)
    ranks = ranks_of(scores)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image_id", "file_name", "score", "rank"] + (["domain"] if domains else []))
    for i, d in enumerate(dicts):
        w.writerow([d.get("image_id", i), d["file_name"], repr(float(scores[i])), int(ranks[i])]
                   + ([domains[i]] if domains else []))
    atomic_write_text(os.path.join(out_dir, "scores.csv"), buf.getvalue())

    files = ["scores.csv"]
    if scorer is not None:
        scorer.save(os.path.join(out_dir, "mask.pt"))
        files.append("mask.pt")

    top = selection.select_top(scores, cfg.IMAGE_SCORE.TOP_FRACTION)
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
    if args.selector == "image_score":
        summary["labeled_datasets"] = list(args.labeled_datasets)
        summary["layers"] = list(scorer.layer_names)
    else:
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
    scorer = None
    with torch.no_grad():
        if args.selector == "image_score":
            labeled = _dicts(args.labeled_datasets, "The labeled")
            logger.info("Fitting the mask on %d labeled images of %s, scoring %d images of %s",
                        len(labeled), args.labeled_datasets, len(pool), args.dataset)
            scores, scorer, scoring_s = selection.image_scores(cfg, model, labeled, pool)
        else:
            logger.info("Running the detector on %d images of %s", len(pool), args.dataset)
            preds, scoring_s = selection.predict(cfg, model, pool, "infer")
            scores = selection.softmax_confidence(preds, cfg.IMAGE_SCORE.BOX_SCORE_THRESH)
    scores = np.asarray(scores, dtype=np.float64)
    summary = write_outputs(out_dir, cfg, args, pool, scores, _domains(args.dataset, pool),
                            scorer, time.perf_counter() - t0, scoring_s)
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
