"""Image Score core, pure PyTorch (no Detectron2 import). See README.md in this folder.

    from imagescore_det.scoring import ImageScorer, ImageBatch
    scorer = ImageScorer(model, layers=None, similarity="iou", threshold_ratio=0.5, grid=None)
    scorer.fit(batches)
    scores = scorer.score(batches)          # float64 (num_images,), <= 0, higher = more typical
    scorer.save(path); scorer = ImageScorer.load(path, model)
"""
from .batches import ImageBatch
from .layers import resolve_layers
from .persistence import FORMAT_VERSION
from .scorer import RATIO_FLOOR, ImageScorer

__all__ = ["ImageScorer", "ImageBatch", "resolve_layers", "FORMAT_VERSION", "RATIO_FLOOR"]
