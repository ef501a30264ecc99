"""Batches of one size for the selection passes (``IMAGE_SCORE.BATCH_SIZE`` > 1).

Detectron2 pads every image of a batch to the largest one. The scorer crops that padding
away, but the activations near the right/bottom border of a smaller image still change:
from the second conv on they see the previous layer's output over the padding instead of
the conv's zero padding, and a GroupNorm computes its statistics over the padding too. A
batch whose images all have the same input size has no padding, so each image's
activations are exactly those of a batch of one (for any backbone in eval mode).

:func:`size_order` orders images by their test-time input size (after Detectron2's
``ResizeShortestEdge``), so batches are of one size wherever the data allows: on VOC most
photos are 500x375 or 375x500, so most batches have no padding. Only batches that straddle
two sizes are padded.
"""
from detectron2.data.transforms import ResizeShortestEdge

__all__ = ["test_input_size", "size_order"]


def test_input_size(cfg, dataset_dict):
    """``(h, w)`` of the image after the test-time resize, or None when its dict has no size."""
    if "height" not in dataset_dict or "width" not in dataset_dict:
        return None
    return tuple(ResizeShortestEdge.get_output_shape(
        dataset_dict["height"], dataset_dict["width"], cfg.INPUT.MIN_SIZE_TEST,
        cfg.INPUT.MAX_SIZE_TEST))


def size_order(cfg, dicts):
    """Indices of ``dicts`` sorted by test-time input size (stable: ties keep dataset order).

    The identity order when some dict has no ``height``/``width``.
    """
    sizes = [test_input_size(cfg, d) for d in dicts]
    if any(size is None for size in sizes):
        return list(range(len(dicts)))
    return sorted(range(len(dicts)), key=lambda i: sizes[i])
