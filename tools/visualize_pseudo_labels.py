#!/usr/bin/env python
"""Draw the pseudo-labels of a selection round, highest Image Score first.

    python tools/visualize_pseudo_labels.py \
        --round-dir output/synthetic/imagescore/image_score/round_1 [--num 16] \
        [--output DIR] [--show-truth] [--max-boxes N]

Reads the round's ``selection.json`` (a round without it is incomplete), ``scores.csv`` and
``pseudo_dataset.json``; writes one PNG per image (``<NNN>_rank<r>_<image_id>.png``) and
``pseudo_labels_montage.png`` to ``--output`` (default ``<round-dir>/visualize``).
Pseudo boxes are solid, one colour per class, labelled "class score"; with
``--show-truth`` the true boxes of the image's VOC XML (when it has one) are dashed white.
"""
import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

from imagescore_det.evaluation.visualize import RoundError, visualize_round

logger = logging.getLogger("imagescore_det.visualize_pseudo_labels")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--round-dir", required=True, metavar="DIR",
                   help="OUTPUT_DIR/image_score/round_<k> of a training run")
    p.add_argument("--num", type=int, default=16,
                   help="images to draw, best score first (0 = all; default 16)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where the PNGs go (default: <round-dir>/visualize)")
    p.add_argument("--show-truth", action="store_true",
                   help="also draw the true boxes (dashed) from the images' VOC XML")
    p.add_argument("--max-boxes", type=int, default=0,
                   help="draw at most this many pseudo boxes per image, best first (0 = all)")
    p.add_argument("--size", type=int, default=480,
                   help="small images are enlarged (integer factor) to about this many pixels")
    return p.parse_args(argv)


def main(args):
    out = visualize_round(args.round_dir, args.output, num=args.num,
                          show_truth=args.show_truth, max_boxes=args.max_boxes,
                          target_size=args.size)
    logger.info("Drew %d of %d pseudo-labeled images into %s (montage: %s)",
                len(out["images"]), out["num_pseudo_images"], out["output_dir"],
                out["montage"])
    return out


if __name__ == "__main__":
    setup_logger(name="imagescore_det")
    try:
        main(parse_args())
    except RoundError as e:
        sys.exit(f"error: {e}")
