"""Batches and padding: ImageBatch, the per-pass batch context, valid-region crops, crop+pool."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .kernels import _pool_matrix, to_device

__all__ = ["ImageBatch", "BatchContext", "valid_crop", "checked_grid", "flatten_layer_output"]


@dataclasses.dataclass
class ImageBatch:
    """One forward pass worth of images, with what is needed to ignore padding.

    Attributes:
        inputs: passed to the model as ``model(inputs)``.
        valid_sizes: ``[(h, w), ...]`` valid (unpadded) pixel size of each image inside the
            padded input, in batch order. ``None``: the whole map is valid.
        input_size: ``(H, W)`` of the padded input; defaults to ``inputs.shape[-2:]`` when
            ``inputs`` is a tensor. For a feature map of spatial size ``(hf, wf)`` the valid
            region of image ``i`` is the top-left ``ceil(h_i*hf/H) x ceil(w_i*wf/W)`` crop
            (at least 1 x 1).
        labels: per-image class ids (ints, or a 1-D integer tensor), used in per-class mode
            (``num_classes`` set): the true label during ``fit``, the predicted label during
            ``score``. Ignored otherwise.
    """

    inputs: Any
    valid_sizes: Optional[Sequence[Tuple[int, int]]] = None
    input_size: Optional[Tuple[int, int]] = None
    labels: Optional[Any] = None


def valid_crop(valid_size: Tuple[int, int], map_size: Tuple[int, int],
               input_size: Tuple[int, int]) -> Tuple[int, int]:
    """Top-left valid crop of a ``map_size`` feature map: ``ceil(h*hf/H) x ceil(w*wf/W)``.

    ``valid_size`` ``(h, w)`` is the image's unpadded size in the padded ``input_size``
    ``(H, W)``; the crop is at least 1 x 1 and at most the whole map.
    """
    (h, w), (hf, wf), (H, W) = valid_size, map_size, input_size
    return min(hf, max(1, -(-h * hf // H))), min(wf, max(1, -(-w * wf // W)))


def _phase_error(phase: str, message: str) -> ValueError:
    return ValueError(f"ImageScorer.{phase}: {message}")


class BatchContext:
    """What the current batch says about its images: count, valid sizes, labels, crops."""

    def __init__(self, layer_names: List[str], num_classes: Optional[int]):
        self.layer_names = layer_names
        self.num_classes = num_classes
        self.calls = [0] * len(layer_names)
        self.num_images: Optional[int] = None
        self.valid_sizes: Optional[List[Tuple[int, int]]] = None
        self.input_size: Optional[Tuple[int, int]] = None
        self.labels: Optional[torch.Tensor] = None
        self._crop_cache: Dict[Tuple[Any, ...], Any] = {}

    def start(self, batch: Any, need_labels: bool, phase: str) -> Any:
        """Reset for ``batch``, check what it carries; returns what to pass to the model."""
        self.calls = [0] * len(self.layer_names)
        self.num_images = None
        self._crop_cache = {}
        self.valid_sizes = self.input_size = self.labels = None
        if not isinstance(batch, ImageBatch):
            if need_labels:
                raise _phase_error(phase, (
                    f"per-class mode (num_classes={self.num_classes}) needs each batch to be an "
                    "ImageBatch with labels (the true class for fit, the predicted class for "
                    "score)"))
            return batch
        if batch.valid_sizes is not None:
            self.valid_sizes = self._checked_valid_sizes(batch.valid_sizes, phase)
            self.input_size = self._padded_input_size(batch, phase)
        if need_labels:
            self.labels = self._checked_labels(batch.labels, phase)
        return batch.inputs

    @staticmethod
    def _checked_valid_sizes(valid_sizes, phase: str) -> List[Tuple[int, int]]:
        sizes = []
        for size in valid_sizes:
            height, width = (int(v) for v in size)
            if height <= 0 or width <= 0:
                raise _phase_error(phase, f"valid size {tuple(size)} must be positive")
            sizes.append((height, width))
        return sizes

    @staticmethod
    def _padded_input_size(batch: ImageBatch, phase: str) -> Tuple[int, int]:
        if batch.input_size is not None:
            height, width = (int(v) for v in batch.input_size)
        elif isinstance(batch.inputs, torch.Tensor) and batch.inputs.dim() >= 2:
            height, width = (int(v) for v in batch.inputs.shape[-2:])
        else:
            raise _phase_error(phase, (
                "ImageBatch.valid_sizes is given but input_size is not, and inputs is not a "
                "tensor to take it from; pass input_size=(H, W) of the padded input"))
        if height <= 0 or width <= 0:
            raise _phase_error(phase, f"input_size {(height, width)} must be positive")
        return height, width

    def _checked_labels(self, labels: Any, phase: str) -> torch.Tensor:
        if labels is None:
            raise _phase_error(phase, (
                f"per-class mode (num_classes={self.num_classes}) needs ImageBatch.labels (the "
                "true class for fit, the predicted class for score)"))
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise _phase_error(phase, "labels must be integer class ids")
        labels = labels.to(device="cpu", dtype=torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise _phase_error(phase, (
                f"labels must be in [0, {self.num_classes}), got {labels.tolist()}"))
        return labels

    def set_num_images(self, num_images: int, name: str) -> None:
        """Record how many images layer ``name`` saw; every layer of the batch must agree."""
        if self.num_images is None:
            self.num_images = num_images
            for what, given in (("valid_sizes", self.valid_sizes), ("labels", self.labels)):
                if given is not None and len(given) != num_images:
                    raise ValueError(
                        f"ImageScorer: layer {name!r} has {num_images} images in its output but "
                        f"the batch has {len(given)} {what}"
                    )
        elif num_images != self.num_images:
            raise ValueError(
                f"ImageScorer: layer {name!r} has {num_images} images in its first dimension "
                f"but an earlier layer had {self.num_images}; every hooked layer must output "
                "(N, ...) for the same N images"
            )

    def crops(self, map_h: int, map_w: int) -> Optional[List[Tuple[int, int]]]:
        """Per-image valid crop of a ``map_h x map_w`` map, or None when all is valid."""
        if self.valid_sizes is None:
            return None
        key = (map_h, map_w)
        crops = self._crop_cache.get(key)
        if crops is None:
            crops = [valid_crop(size, key, self.input_size) for size in self.valid_sizes]
            self._crop_cache[key] = crops
        return crops

    def labels_on(self, device) -> torch.Tensor:
        """The batch's labels on ``device``, copied there once per batch (not per layer)."""
        key = ("labels", str(device))
        labels = self._crop_cache.get(key)
        if labels is None:
            labels = to_device(self.labels, device)
            self._crop_cache[key] = labels
        return labels

    def pool_matrices(self, map_h, map_w, grid_h, grid_w, dtype, device):
        """Per-image crop+pool matrices ``(N|1, grid_h, map_h)``, ``(N|1, map_w, grid_w)``."""
        key = (map_h, map_w, grid_h, grid_w, dtype, device)
        matrices = self._crop_cache.get(key)
        if matrices is None:
            crops = self.crops(map_h, map_w)
            if all(crop == crops[0] for crop in crops):
                crops = crops[:1]  # broadcast one pair over the batch
            rows = torch.stack([_pool_matrix(crop_h, map_h, grid_h) for crop_h, _ in crops])
            cols = torch.stack([_pool_matrix(crop_w, map_w, grid_w).t() for _, crop_w in crops])
            matrices = (to_device(rows.to(dtype=dtype), device),
                        to_device(cols.to(dtype=dtype), device))
            self._crop_cache[key] = matrices
        return matrices


def checked_grid(grid: Any) -> Optional[Tuple[int, int]]:
    """``grid`` (``None`` or ``(h, w)``, the size every spatial map is pooled to) as ints."""
    if grid is None:
        return None
    try:
        grid_h, grid_w = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"ImageScorer: grid must be None or (h, w), got {grid!r}") from None
    if grid_h <= 0 or grid_w <= 0 or (grid_h, grid_w) != tuple(grid):
        raise ValueError(f"ImageScorer: grid must be two positive ints, got {grid!r}")
    return grid_h, grid_w


def flatten_layer_output(output: torch.Tensor, ctx: BatchContext,
                         grid: Optional[Tuple[int, int]], name: str) -> torch.Tensor:
    """Crop padding / pool to the grid; returns a (num_images, neurons) view/tensor."""
    num_images = output.shape[0]
    if output.dtype not in (torch.float32, torch.float64):
        output = output.float()
    if output.dim() == 2:
        return output
    _, channels, map_h, map_w = output.shape
    crops = ctx.crops(map_h, map_w)
    if grid is None:
        if crops is not None and any(crop != (map_h, map_w) for crop in crops):
            raise ValueError(
                f"ImageScorer: layer {name!r}: the batch has padding (valid_sizes smaller "
                "than the input) but grid=None cannot crop it away without changing the map "
                "shape; pass grid=(h, w) to crop and pool every map to a fixed grid"
            )
        return output.reshape(num_images, -1)
    grid_h, grid_w = grid
    if crops is None or all(crop == (map_h, map_w) for crop in crops):
        if (map_h, map_w) == (grid_h, grid_w):
            return output.reshape(num_images, -1)
        return F.adaptive_avg_pool2d(output, (grid_h, grid_w)).reshape(num_images, -1)
    # crop + adaptive average pooling as two small matmuls with per-image averaging
    # matrices (zero weight on padding): vectorized over the batch, no crop copies.
    # Shapes: N images, C channels; the matrices have a first dimension N, or 1 (broadcast).
    pool_rows, pool_cols = ctx.pool_matrices(map_h, map_w, grid_h, grid_w, output.dtype,
                                             output.device)
    by_rows = output.reshape(num_images, channels * map_h, map_w)
    cols_pooled = torch.matmul(by_rows, pool_cols)  # (N, C*map_h, map_w) @ (N|1, map_w, grid_w)
    by_cols = cols_pooled.view(num_images, channels, map_h, grid_w).transpose(1, 2).reshape(
        num_images, map_h, channels * grid_w)
    pooled = torch.matmul(pool_rows, by_cols)  # (N|1, grid_h, map_h) @ (N, map_h, C*grid_w)
    return pooled.view(num_images, grid_h, channels, grid_w).transpose(1, 2).reshape(num_images, -1)
