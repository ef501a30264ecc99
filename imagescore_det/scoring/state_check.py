"""Checks of a saved scorer's state (``mask.pt``) before :meth:`ImageScorer.load` uses it.

``torch.load(weights_only=True)`` guarantees the file holds only tensors and plain
containers; this guarantees they make a scorer: every key, type and shape agrees with the
others, so a damaged or hand-edited mask fails at load with what is wrong, not as a shape
error (or a silently wrong score) later.
"""
import math
import numbers

import torch

KEYS = ("layer_names", "shapes", "thresholds", "masks", "class_counts", "similarity",
        "threshold_ratio", "grid", "num_classes")


def _positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def check_scorer_state(state, path, similarities):
    """Raise ``ValueError`` naming ``path``, the key and the fix when ``state`` is not a
    consistent saved scorer."""
    def fail(what):
        raise ValueError(
            f"ImageScorer.load: {path!r} is damaged or was edited: {what}. Delete it and fit "
            "the scorer again (a selection round's mask.pt: delete the round folder and resume "
            "training to recompute the round).")

    missing = [key for key in KEYS if key not in state]
    if missing:
        fail(f"keys {missing} are missing")
    names = state["layer_names"]
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)):
        fail(f"'layer_names' is {names!r}, expected a list of distinct module names")
    n_layers = len(names)
    shapes = state["shapes"]
    if (not isinstance(shapes, list) or len(shapes) != n_layers
            or not all(isinstance(s, (list, tuple)) and s and all(_positive_int(v) for v in s)
                       for s in shapes)):
        fail(f"'shapes' must be {n_layers} lists of positive sizes, one per layer")
    num_classes = state["num_classes"]
    if num_classes is not None and not _positive_int(num_classes):
        fail(f"'num_classes' is {num_classes!r}, expected None or a positive integer")
    k = num_classes or 1
    thresholds = state["thresholds"]
    if not isinstance(thresholds, torch.Tensor) or tuple(thresholds.shape) != (k, n_layers) \
            or not thresholds.is_floating_point():
        fail(f"'thresholds' must be a float tensor of shape ({k}, {n_layers})")
    counts = state["class_counts"]
    if not isinstance(counts, torch.Tensor) or tuple(counts.shape) != (k,) \
            or not bool(torch.isfinite(counts.double()).all()) or bool((counts < 0).any()):
        fail(f"'class_counts' must be {k} finite non-negative counts")
    present = counts > 0
    t = thresholds.double()
    if not bool((torch.isfinite(t) | torch.isnan(t)).all()) or \
            bool(torch.isnan(t[present]).any()):
        fail("'thresholds' hold infinite values, or NaN for a class that has fitted images")
    masks = state["masks"]
    if not isinstance(masks, list) or len(masks) != n_layers:
        fail(f"'masks' must be a list of {n_layers} tensors, one per layer")
    for name, shape, mask in zip(names, shapes, masks):
        expected = (k,) + tuple(int(v) for v in shape)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != expected:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            fail(f"the mask of layer {name!r} is {got}, expected shape {expected}")
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            fail(f"the mask of layer {name!r} holds values other than 0 and 1")
    if state["similarity"] not in similarities:
        fail(f"'similarity' is {state['similarity']!r}, expected one of {similarities}")
    ratio = state["threshold_ratio"]
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or \
            not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
        fail(f"'threshold_ratio' is {ratio!r}, expected a number in (0, 1]")
    grid = state["grid"]
    if grid is not None and not (isinstance(grid, (list, tuple)) and len(grid) == 2
                                 and all(_positive_int(g) for g in grid)):
        fail(f"'grid' is {grid!r}, expected None or two positive sizes")
