"""Image Score: how typical an image's chain of activation is of a labeled dataset.

For a model and a set of images, record the activation map ``X_{I,l}`` of each chosen layer
``l``. With ``Xbar_l`` the mean of ``X_{I,l}`` over the fitted (labeled) images,

* threshold ``t_l = threshold_ratio * max(Xbar_l)``;
* dataset mask ``M_l = 1{Xbar_l >= t_l}``; image mask ``M_{I,l} = 1{X_{I,l} >= t_l}``;
* overlap ``r_{I,l}``: IoU ``|M_I & M| / |M_I | M|`` (default), recall ``|M_I & M| / |M|``
  or precision ``|M_I & M| / |M_I|`` (penalises activation outside the dataset mask);
* score ``s_I = sum_l log(max(r_{I,l}, 1e-6))`` (<= 0; higher = more typical).

Note on the threshold: the source paper writes ``t_l`` from the *sum* of the activation
maps over the dataset. A threshold that large is above every single image's activations,
so every image mask would be empty and every score the same floor. We use the *mean*
(equivalently, the sum divided by the number of images), which is the working reading.

Layers whose dataset mask is empty (only possible when ``max(Xbar_l) < 0``, e.g. a layer
that is not after a ReLU) are skipped: they contribute 0 to every score and are reported
once as a warning.

Pure PyTorch; no Detectron2 import. This module holds the method; the plumbing is in
``batches`` (ImageBatch, padding crops), ``passes`` (hooked forward passes), ``kernels``
(mask popcounts, pool matrices), ``persistence`` (save/load), ``diagnostics`` and ``layers``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from . import persistence
from .batches import ImageBatch, checked_grid
from .diagnostics import empty_mask_messages, explain_table, skipped_layer_names
from .kernels import _as_words, _float32_at_least, mask_counts, to_device
from .layers import LayerSpec, resolve_layers
from .passes import run_pass
from .persistence import FORMAT_NAME, FORMAT_VERSION

__all__ = ["ImageBatch", "ImageScorer", "FORMAT_NAME", "FORMAT_VERSION", "RATIO_FLOOR"]

RATIO_FLOOR = 1e-6
SIMILARITIES = ("iou", "recall", "precision")


# --------------------------------------------------------------------------------------
# the method: t_l and M_l from the mean maps (fit), then one log-overlap term per layer
# (score); the image masks M_{I,l} = 1{X_{I,l} >= t_l} are taken in ImageScorer.score
# --------------------------------------------------------------------------------------
def thresholds_and_masks(mean: torch.Tensor, present: torch.Tensor, threshold_ratio: float):
    """``t_l = threshold_ratio * max(Xbar_l)`` and ``M_l = 1{Xbar_l >= t_l}`` of one layer.

    ``mean``: (K, neurons) float64 ``Xbar_l``, one row per class (K = 1 without classes);
    ``present``: (K,) bool, the classes that had fitted images. An absent class gets a NaN
    threshold and an empty mask. Returns ``(thresholds (K,), masks (K, neurons) bool)``.
    """
    threshold = threshold_ratio * mean.amax(1)
    threshold = torch.where(present, threshold, torch.full_like(threshold, math.nan))
    mask = (mean >= threshold.unsqueeze(1)) & present.unsqueeze(1)
    return threshold, mask


def overlap_scores(intersection: torch.Tensor, image_mask_size: torch.Tensor,
                   dataset_mask_size: torch.Tensor, similarity: str):
    """``r_{I,l}``, its term ``log(max(r, 1e-6))`` and ``s_I``, the sum of the terms.

    Inputs: float64 (num_images, num_layers) counts ``|M_I & M_l|``, ``|M_I|``, ``|M_l|``.
    A layer with an empty ``M_l`` is skipped: ratio NaN, term 0.
    """
    skipped = dataset_mask_size == 0
    if similarity == "iou":  # |A & B| / |A | B|
        denominator = image_mask_size + dataset_mask_size - intersection
    elif similarity == "recall":  # |A & B| / |B|
        denominator = dataset_mask_size
    else:  # precision: |A & B| / |A| (an empty image mask gives 0: nothing in common)
        denominator = image_mask_size
    ratio = intersection / denominator.clamp(min=1)
    ratio = torch.where(skipped, torch.full_like(ratio, math.nan), ratio)
    log_ratio = torch.log(ratio.clamp(min=RATIO_FLOOR))
    log_ratio = torch.where(skipped, torch.zeros_like(log_ratio), log_ratio)
    return ratio, log_ratio, log_ratio.sum(1)


# --------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------
class ImageScorer:
    """Fit dataset masks on labeled images, then score images by their mask overlap.

    Args:
        model: an ``nn.Module``; every batch is passed as ``model(batch)`` (or
            ``model(batch.inputs)`` for an :class:`ImageBatch`) and its return value ignored.
        layers: which module outputs to record, see :func:`resolve_layers` (``None``: every
            ``nn.ReLU``; a regex string; a predicate ``(name, module) -> bool``; a list of
            names). Each must output one tensor, ``(N, C, H, W)`` or ``(N, F)``.
        similarity: ``"iou"`` (default), ``"recall"`` (``|A & B| / |B|``, B = dataset mask)
            or ``"precision"`` (``|A & B| / |A|``, A = image mask).
        threshold_ratio: ``t_l = threshold_ratio * max(mean activation of l)``, in (0, 1].
        grid: ``None`` (every image must give the same map shapes) or ``(h, w)``: every
            spatial map is cropped to the image's valid region (see :class:`ImageBatch`) and
            adaptive-average-pooled to ``h x w`` so neurons line up across image sizes.
        num_classes: ``None`` (one mask per layer) or K: per-class mode, one mask per layer
            and class, fitted on the images of that (true) label and scored against the
            mask of the image's (predicted) label.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec = None,
        similarity: str = "iou",
        threshold_ratio: float = 0.5,
        grid: Optional[Tuple[int, int]] = None,
        num_classes: Optional[int] = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"ImageScorer: model must be an nn.Module, got {type(model).__name__}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"ImageScorer: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        ratio = float(threshold_ratio)
        if not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
            raise ValueError(f"ImageScorer: threshold_ratio must be in (0, 1], got {threshold_ratio!r}")
        self.model = model
        self.similarity = similarity
        self.threshold_ratio = ratio
        self.grid = checked_grid(grid)
        self.num_classes = _checked_num_classes(num_classes)
        self.layer_names: List[str] = resolve_layers(model, layers)
        self._reset_fit()

    # ------------------------------------------------------------------ fit
    def fit(self, batches: Iterable[Any],
            all_reduce: Optional[Callable[[torch.Tensor], Any]] = None) -> "ImageScorer":
        """Fit the dataset masks on ``batches`` (labeled images); streams, O(neurons) memory.

        ``all_reduce``: optional callable applied in place to every float64 accumulator
        (per-layer sums in ``layer_names`` order, then the per-class image counts) before the
        means are taken; pass a ``torch.distributed`` SUM all-reduce so every rank gets the
        same masks. Returns ``self``.
        """
        num_layers, num_groups = len(self.layer_names), self._num_groups
        sums: List[Optional[torch.Tensor]] = [None] * num_layers  # sum_I X_{I,l}, per class
        shapes: List[Optional[Tuple[int, ...]]] = [None] * num_layers
        counts = torch.zeros(num_groups, dtype=torch.float64)
        per_class = self.num_classes is not None
        nonfinite: List[Optional[torch.Tensor]] = [None] * num_layers  # this batch, on device

        def on_layer(idx, activations, ctx, per_image):
            if sums[idx] is None:
                sums[idx] = torch.zeros((num_groups, activations.shape[1]), dtype=torch.float64,
                                        device=activations.device)
                shapes[idx] = per_image
            elif per_image != shapes[idx]:
                raise ValueError(
                    f"ImageScorer.fit: layer {self.layer_names[idx]!r} gives per-image shape "
                    f"{per_image} but earlier batches gave {shapes[idx]}; grid=None requires all "
                    "images to have equal shapes; pass grid=(h, w) to pool maps to a fixed grid"
                )
            # non-finite values are flagged on the device and checked once per batch (a
            # bool() here would wait for the device at every layer)
            if per_class:
                as_float64 = activations.to(torch.float64)
                nonfinite[idx] = ~torch.isfinite(as_float64.sum())
                sums[idx].index_add_(0, ctx.labels_on(activations.device), as_float64)
            else:
                batch_sum = activations.sum(0, dtype=torch.float64)
                nonfinite[idx] = ~torch.isfinite(batch_sum).all()
                sums[idx][0] += batch_sum

        def on_batch(ctx):
            self._check_finite(nonfinite)
            if per_class:
                counts.index_add_(0, ctx.labels, torch.ones(ctx.num_images, dtype=torch.float64))
            else:
                counts[0] += ctx.num_images

        self._run_pass(batches, "fit", on_layer, on_batch, need_labels=per_class)
        if all_reduce is not None:
            for accumulator in sums + [counts]:
                all_reduce(accumulator)
        present = counts > 0
        thresholds = torch.empty((num_groups, num_layers), dtype=torch.float64)
        masks = []
        for layer, layer_sum in enumerate(sums):
            mean = layer_sum.cpu() / counts.clamp(min=1).unsqueeze(1)  # Xbar_l
            thresholds[:, layer], mask = thresholds_and_masks(mean, present, self.threshold_ratio)
            masks.append(mask.reshape((num_groups,) + tuple(shapes[layer])))
        self._set_state(list(shapes), thresholds, masks, counts.clone())
        self._warn_empty(force=True)
        return self

    # ------------------------------------------------------------------ score
    def score(self, batches: Iterable[Any], details: bool = False):
        """Score every image of ``batches``: float64 tensor ``(num_images,)``, in input order.

        With ``details=True`` returns ``(scores, details)``; ``details`` is a dict of float64
        ``(num_images, num_layers)`` tensors ``ratio`` (overlap; NaN for a skipped layer),
        ``log_ratio`` (the layer's term of the score; 0 for a skipped layer),
        ``image_mask_size``, ``intersection``, ``dataset_mask_size``, plus ``layer_names``,
        ``num_neurons`` and ``labels`` (per-class mode, else None).
        """
        self._require_fitted("score")
        self._warn_empty()
        num_layers = len(self.layer_names)
        per_class = self.num_classes is not None
        device_masks: Dict[Any, List[Tuple[torch.Tensor, Optional[torch.Tensor]]]] = {}
        intersection_parts: List[torch.Tensor] = []
        size_parts: List[torch.Tensor] = []
        label_parts: List[torch.Tensor] = []
        batch_intersections: List[Optional[torch.Tensor]] = [None] * num_layers
        batch_sizes: List[Optional[torch.Tensor]] = [None] * num_layers
        nonfinite: List[Optional[torch.Tensor]] = [None] * num_layers  # this batch, on device
        device_thresholds: Dict[Any, torch.Tensor] = {}

        def on_layer(idx, activations, ctx, per_image):
            # Nothing here reads a value back to the host: the non-finite flag stays on the
            # device until on_batch, and the counts until the end of the pass. NaN propagates
            # through amin/amax and an Inf is the min or the max, so both finite <=> all
            # finite (no overflow, unlike a sum).
            lowest, highest = torch.aminmax(activations)
            nonfinite[idx] = ~(torch.isfinite(lowest) & torch.isfinite(highest))
            select = ctx.labels_on(activations.device) if per_class else 0
            threshold = self._image_threshold(idx, activations, select, device_thresholds)
            image_masks = activations >= threshold  # M_{I,l}
            flat_dataset_masks, dataset_words = self._masks_on(
                activations.device, device_masks)[idx]
            batch_sizes[idx], batch_intersections[idx] = mask_counts(
                image_masks, flat_dataset_masks, dataset_words, select)

        def on_batch(ctx):
            self._check_finite(nonfinite)  # the one host read of the batch
            intersection_parts.append(torch.stack(batch_intersections, 1))
            size_parts.append(torch.stack(batch_sizes, 1))
            if per_class:
                self._check_predicted_classes(ctx.labels)
                label_parts.append(ctx.labels)

        self._run_pass(batches, "score", on_layer, on_batch, need_labels=per_class,
                       shapes=self.layer_shapes)
        intersection = torch.cat(intersection_parts).cpu().to(torch.float64)
        image_mask_size = torch.cat(size_parts).cpu().to(torch.float64)
        if per_class:
            labels = torch.cat(label_parts)
            dataset_mask_size = self._mask_sizes[labels].to(torch.float64)
        else:
            labels = None
            dataset_mask_size = self._mask_sizes[0].to(torch.float64).expand_as(intersection).clone()
        ratio, log_ratio, scores = overlap_scores(
            intersection, image_mask_size, dataset_mask_size, self.similarity)
        if not details:
            return scores
        return scores, {
            "layer_names": list(self.layer_names),
            "num_neurons": self.num_neurons(),
            "ratio": ratio,
            "log_ratio": log_ratio,
            "image_mask_size": image_mask_size,
            "intersection": intersection,
            "dataset_mask_size": dataset_mask_size,
            "labels": labels,
        }

    @staticmethod
    def explain(details: Dict[str, Any], index: int) -> str:
        """A per-layer table for image ``index`` of ``score(..., details=True)`` output."""
        return explain_table(details, index)

    # ------------------------------------------------------------------ score helpers
    def _image_threshold(self, idx: int, activations: torch.Tensor, select,
                         cache: Dict[Any, torch.Tensor]):
        """``t_l`` to compare ``activations`` with: exact in their dtype (see _float32_at_least).

        Activations reach here as float32 or float64 (half precision is widened exactly in
        ``flatten_layer_output``), so under autocast the comparison is the same float64
        comparison as without it. Per class: a (n, 1) tensor, the threshold of each image's
        class (the (K, L) table goes to the device once per pass, in ``cache``); else a float.
        """
        if self.num_classes is None:
            if activations.dtype == torch.float32:
                return self._thresholds_f32[idx][0]
            return float(self.thresholds[0, idx])
        key = (activations.dtype, activations.device)
        table = cache.get(key)
        if table is None:
            if activations.dtype == torch.float64:
                table = self.thresholds.nan_to_num(nan=math.inf)
            else:  # [L][K] -> (K, L)
                table = torch.tensor(self._thresholds_f32, dtype=activations.dtype).t()
            table = to_device(table.contiguous(), activations.device)
            cache[key] = table
        return table[:, idx][select].unsqueeze(1)

    def _masks_on(self, device, cache: Dict[Any, Any]) -> List[Tuple[torch.Tensor, Any]]:
        """Per layer, the flat dataset masks on ``device`` and their int64-word view (cached)."""
        masks = cache.get(device)
        if masks is None:
            masks = []
            for flat in self._flat_masks:
                flat = to_device(flat.contiguous(), device)
                masks.append((flat, _as_words(flat)))
            cache[device] = masks
        return masks

    def _check_predicted_classes(self, labels: torch.Tensor) -> None:
        present = self.class_counts > 0
        if not bool(present[labels].all()):
            absent = sorted(set(labels[~present[labels]].tolist()))
            raise ValueError(
                f"ImageScorer.score: image(s) predicted as class {absent}, but no fitted "
                "image had that class, so there is no mask to compare with; fit on data "
                "covering every class or map such images to a fitted class")

    def _run_pass(self, batches, phase, on_layer, on_batch, need_labels, shapes=None) -> int:
        return run_pass(self.model, self.layer_names, batches, phase, on_layer, on_batch,
                        grid=self.grid, num_classes=self.num_classes, need_labels=need_labels,
                        shapes=shapes)

    def _check_finite(self, nonfinite: List[Optional[torch.Tensor]]) -> None:
        """Raise if a layer flagged non-finite values in this batch; one host read for all
        layers. Resets the flags for the next batch."""
        flagged = [(idx, flag) for idx, flag in enumerate(nonfinite) if flag is not None]
        for idx in range(len(nonfinite)):
            nonfinite[idx] = None
        if not flagged:
            return
        values = torch.stack([flag.to(flagged[0][1].device) for _, flag in flagged]).cpu()
        if bool(values.any()):
            first = flagged[int(values.nonzero()[0, 0])][0]
            raise FloatingPointError(
                f"ImageScorer: layer {self.layer_names[first]!r} produced non-finite (NaN/Inf) "
                "activation value(s) in this batch; check the model weights and inputs (under "
                "SOLVER.AMP.ENABLED, float16 can overflow where float32 does not)"
            )

    # ------------------------------------------------------------------ state
    def _reset_fit(self) -> None:
        self.layer_shapes: Optional[List[Tuple[int, ...]]] = None
        self.thresholds: Optional[torch.Tensor] = None  # (K, L) float64, K = num_classes or 1
        self.masks: Optional[List[torch.Tensor]] = None  # per layer, bool (K, *shape)
        self.class_counts: Optional[torch.Tensor] = None  # (K,) float64 images per class
        self._mask_sizes: Optional[torch.Tensor] = None  # (K, L) int64
        self._flat_masks: Optional[List[torch.Tensor]] = None
        self._thresholds_f32: Optional[List[List[float]]] = None
        self._warned_empty = False

    def _set_state(self, shapes, thresholds, masks, class_counts) -> None:
        self.layer_shapes = [tuple(int(v) for v in shape) for shape in shapes]
        self.thresholds = thresholds
        self.masks = masks
        self.class_counts = class_counts
        self._flat_masks = [mask.reshape(mask.shape[0], -1) for mask in masks]
        self._mask_sizes = torch.stack([flat.sum(1) for flat in self._flat_masks], 1).to(torch.int64)
        # float32 comparison thresholds, [L][K]: inf for a class without images
        self._thresholds_f32 = [[_float32_at_least(float(t)) if math.isfinite(float(t)) else math.inf
                        for t in row] for row in thresholds.t()]
        self._warned_empty = False

    @property
    def is_fitted(self) -> bool:
        return self.masks is not None

    @property
    def _num_groups(self) -> int:
        """K: masks per layer, one per class (``num_classes``) or a single one."""
        return self.num_classes or 1

    def mask_sizes(self) -> torch.Tensor:
        """Dataset-mask sizes (number of active neurons): int64 ``(L,)``, or ``(K, L)`` per class."""
        self._require_fitted("mask_sizes")
        return self._mask_sizes[0].clone() if self.num_classes is None else self._mask_sizes.clone()

    def num_neurons(self) -> List[int]:
        """Neurons per layer (after crop/pool), in ``layer_names`` order."""
        self._require_fitted("num_neurons")
        return [int(math.prod(shape)) for shape in self.layer_shapes]

    def skipped_layers(self) -> List[str]:
        """Layers whose dataset mask is empty (for every class with images): they score 0."""
        self._require_fitted("skipped_layers")
        return skipped_layer_names(self.layer_names, self._mask_sizes, self.class_counts)

    def _require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                f"ImageScorer.{what}: the scorer is not fitted; call scorer.fit(labeled_batches) "
                "or ImageScorer.load(path, model) first"
            )

    def _warn_empty(self, force: bool = False) -> None:
        if self._warned_empty and not force:
            return
        self._warned_empty = True
        for message in empty_mask_messages(self.layer_names, self._mask_sizes, self.class_counts,
                                           per_class=self.num_classes is not None):
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (
            f"ImageScorer(layers={len(self.layer_names)}, similarity={self.similarity!r}, "
            f"threshold_ratio={self.threshold_ratio}, grid={self.grid}, "
            f"num_classes={self.num_classes}, fitted={self.is_fitted})"
        )

    # ------------------------------------------------------------------ save / load
    def state_dict(self) -> Dict[str, Any]:
        """The dict :meth:`save` writes (format in :mod:`.persistence`)."""
        self._require_fitted("save")
        return persistence.scorer_state(self)

    def save(self, path: str) -> None:
        """Write the fitted scorer to ``path`` (torch.save; atomic: temp file + os.replace)."""
        persistence.save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str, model: nn.Module, layers: LayerSpec = None) -> "ImageScorer":
        """Load a scorer saved by :meth:`save` and attach it to ``model``.

        Fails with a clear message when the file is not a scorer / has another format
        version, when a saved layer is not a module of ``model``, when ``layers`` is given and
        resolves to a different list than the saved one, or when a saved conv/linear layer's
        channel count differs from the module's.
        """
        return persistence.load_scorer(cls, path, model, layers)


def _checked_num_classes(num_classes) -> Optional[int]:
    if num_classes is None:
        return None
    if int(num_classes) != num_classes or int(num_classes) < 1:
        raise ValueError(f"ImageScorer: num_classes must be None or an int >= 1, got {num_classes!r}")
    return int(num_classes)
