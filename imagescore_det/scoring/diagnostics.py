"""Diagnostics of a fitted ImageScorer: skipped (empty-mask) layers, warnings, explain table."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import torch

__all__ = ["skipped_layer_names", "empty_mask_messages", "explain_table"]


def skipped_layer_names(layer_names: List[str], mask_sizes: torch.Tensor,
                        class_counts: torch.Tensor) -> List[str]:
    """Layers whose dataset mask is empty for every class with images (``mask_sizes`` (K, L))."""
    present = class_counts > 0
    empty = (mask_sizes[present] == 0).all(0) if bool(present.any()) else torch.ones(
        len(layer_names), dtype=torch.bool)
    return [name for name, is_empty in zip(layer_names, empty.tolist()) if is_empty]


def empty_mask_messages(layer_names: List[str], mask_sizes: torch.Tensor,
                        class_counts: torch.Tensor, per_class: bool) -> List[str]:
    """What to warn about once: layers skipped for an empty mask, classes without images."""
    messages = []
    if not per_class:
        skipped = skipped_layer_names(layer_names, mask_sizes, class_counts)
        if skipped:
            messages.append(
                f"ImageScorer: the dataset mask of layer(s) {skipped} is empty (max mean "
                "activation < 0?); they are skipped and contribute 0 to every score")
        return messages
    present = (class_counts > 0).tolist()
    absent = [k for k, has_images in enumerate(present) if not has_images]
    if absent:
        messages.append(
            f"ImageScorer: no fitted image has class {absent}; scoring an image predicted "
            "as one of them raises an error")
    pairs = [(name, k) for k, has_images in enumerate(present) if has_images
             for layer, name in enumerate(layer_names) if int(mask_sizes[k, layer]) == 0]
    if pairs:
        messages.append(
            f"ImageScorer: empty dataset masks for (layer, class) {pairs}; they are "
            "skipped and contribute 0 to the scores of images of that class")
    return messages


def explain_table(details: Dict[str, Any], index: int) -> str:
    """A per-layer table for image ``index`` of ``score(..., details=True)`` output."""
    rows = [f"{'layer':<32} {'neurons':>8} {'|M_l|':>8} {'|M_I|':>8} {'|M_I&M_l|':>10} "
            f"{'ratio':>8} {'log':>9}"]
    for layer, name in enumerate(details["layer_names"]):
        ratio = float(details["ratio"][index, layer])
        rows.append(
            f"{name:<32} {details['num_neurons'][layer]:>8} "
            f"{int(details['dataset_mask_size'][index, layer]):>8} "
            f"{int(details['image_mask_size'][index, layer]):>8} "
            f"{int(details['intersection'][index, layer]):>10} "
            f"{'skipped' if math.isnan(ratio) else format(ratio, '.4f'):>8} "
            f"{float(details['log_ratio'][index, layer]):>9.3f}")
    rows.append(f"score = {float(details['log_ratio'][index].sum()):.4f}")
    return "\n".join(rows)
