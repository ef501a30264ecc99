"""Saving and loading a fitted ImageScorer: the versioned ``torch.save`` dict format.

The file is ``torch.save`` of a dict with the keys ``format`` (:data:`FORMAT_NAME`),
``version`` (:data:`FORMAT_VERSION`), ``layer_names``, ``shapes`` (lists of ints),
``thresholds`` ((K, L) float64), ``masks`` (per layer, bool (K, *shape)), ``class_counts``
((K,) float64), ``similarity``, ``threshold_ratio``, ``grid`` (list or None) and
``num_classes``. Changing any of them means a new FORMAT_VERSION.
"""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from ..utils import atomic_write_bytes
from .state_check import check_scorer_state
from .layers import LayerSpec, resolve_layers, unknown_layer_message

if TYPE_CHECKING:  # pragma: no cover
    from .scorer import ImageScorer

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "scorer_state", "save_state", "load_scorer"]

FORMAT_NAME = "imagescore_det.scoring.ImageScorer"
FORMAT_VERSION = 1


def scorer_state(scorer: "ImageScorer") -> Dict[str, Any]:
    """The dict that :func:`save_state` writes, for a fitted ``scorer`` (tensors cloned)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "layer_names": list(scorer.layer_names),
        "shapes": [list(shape) for shape in scorer.layer_shapes],
        "thresholds": scorer.thresholds.clone(),
        "masks": [mask.clone() for mask in scorer.masks],
        "class_counts": scorer.class_counts.clone(),
        "similarity": scorer.similarity,
        "threshold_ratio": scorer.threshold_ratio,
        "grid": list(scorer.grid) if scorer.grid is not None else None,
        "num_classes": scorer.num_classes,
    }


def save_state(state: Dict[str, Any], path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (readers never see half a file)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(os.fspath(path), buffer.getvalue())


def _read_state(path) -> Dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"ImageScorer.load: cannot read {path!r} as a saved ImageScorer (truncated, or not "
            f"written by ImageScorer.save): {error}. Delete it and fit the scorer again.") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
        raise ValueError(f"ImageScorer.load: {path!r} is not a file written by ImageScorer.save")
    version = state.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"ImageScorer.load: {path!r} has format version {version}, this code reads "
            f"version {FORMAT_VERSION}; refit the scorer with this version (scorer.fit + save)")
    from .scorer import SIMILARITIES  # the method's module owns the list

    check_scorer_state(state, path, SIMILARITIES)
    return state


def _check_layers(path, saved: List[str], modules: Dict[str, nn.Module], model: nn.Module,
                  layers: LayerSpec) -> None:
    missing = [name for name in saved if name not in modules]
    if missing:
        details = "; ".join(
            unknown_layer_message(name, list(modules), "saved layer") for name in missing[:3])
        raise ValueError(
            f"ImageScorer.load: {path!r} was fitted on layers the given model does not have "
            f"({len(missing)} of {len(saved)} missing): {details}. Pass the same module the "
            "scorer was fitted on (e.g. model.backbone vs the full model, or model.module for "
            "a DistributedDataParallel wrapper), or refit the scorer on this model.")
    if layers is None:
        return
    wanted = resolve_layers(model, layers)
    if wanted != saved:
        only_saved = [name for name in saved if name not in wanted]
        only_wanted = [name for name in wanted if name not in saved]
        raise ValueError(
            f"ImageScorer.load: the layer list differs from the one {path!r} was fitted "
            f"with: saved-only {only_saved}, requested-only {only_wanted}"
            + (" (same layers, different order)" if not only_saved and not only_wanted else "")
            + ". Use the saved layers (layers=None) or refit with the new list.")


def _check_channels(saved: List[str], shapes: List[Tuple[int, ...]],
                    modules: Dict[str, nn.Module]) -> None:
    for name, shape in zip(saved, shapes):
        module = modules[name]
        expected: Optional[int] = None
        if isinstance(module, nn.Conv2d) and len(shape) == 3:
            expected = module.out_channels
        elif isinstance(module, nn.Linear) and len(shape) == 1:
            expected = module.out_features
        if expected is not None and expected != shape[0]:
            raise ValueError(
                f"ImageScorer.load: layer {name!r} was fitted with {shape[0]} channels but the "
                f"model's module has {expected}; this is a different model, refit the scorer")


def load_scorer(cls: Type["ImageScorer"], path, model: nn.Module,
                layers: LayerSpec = None) -> "ImageScorer":
    """Read ``path``, check it against ``model`` (and ``layers``), build a fitted ``cls``."""
    state = _read_state(path)
    saved = list(state["layer_names"])
    modules = dict(model.named_modules())
    _check_layers(path, saved, modules, model, layers)
    shapes = [tuple(int(v) for v in shape) for shape in state["shapes"]]
    _check_channels(saved, shapes, modules)
    grid = tuple(state["grid"]) if state["grid"] is not None else None
    scorer = cls(model, layers=saved, similarity=state["similarity"],
                 threshold_ratio=state["threshold_ratio"], grid=grid,
                 num_classes=state["num_classes"])
    scorer._set_state(shapes, state["thresholds"].to(torch.float64),
                      [mask.to(torch.bool) for mask in state["masks"]],
                      state["class_counts"].to(torch.float64))
    return scorer
