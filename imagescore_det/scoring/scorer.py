"""Image Score: how typical an image's chain of activation is of a labeled dataset.

For a model and a set of images, record the activation map ``X_{I,l}`` of each chosen layer
``l``. With ``Xbar_l`` the mean of ``X_{I,l}`` over the fitted (labeled) images,

* threshold ``t_l = threshold_ratio * max(Xbar_l)``;
* dataset mask ``M_l = 1{Xbar_l >= t_l}``; image mask ``M_{I,l} = 1{X_{I,l} >= t_l}``;
* overlap ``r_{I,l}``: IoU ``|M_I & M| / |M_I | M|`` or recall ``|M_I & M| / |M|``;
* score ``s_I = sum_l log(max(r_{I,l}, 1e-6))`` (<= 0; higher = more typical).

Note on the threshold: the source paper writes ``t_l`` from the *sum* of the activation
maps over the dataset. A threshold that large is above every single image's activations,
so every image mask would be empty and every score the same floor. We use the *mean*
(equivalently, the sum divided by the number of images), which is the working reading.

Layers whose dataset mask is empty (only possible when ``max(Xbar_l) < 0``, e.g. a layer
that is not after a ReLU) are skipped: they contribute 0 to every score and are reported
once as a warning.

Pure PyTorch; no Detectron2 import.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerSpec, resolve_layers, unknown_layer_message
from .state_check import check_scorer_state

__all__ = ["ImageBatch", "ImageScorer", "FORMAT_NAME", "FORMAT_VERSION", "RATIO_FLOOR"]

FORMAT_NAME = "imagescore_det.scoring.ImageScorer"
FORMAT_VERSION = 1
RATIO_FLOOR = 1e-6
SIMILARITIES = ("iou", "recall")


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


# --------------------------------------------------------------------------------------
# per-pass context: what one batch says about its images
# --------------------------------------------------------------------------------------
class _BatchContext:
    def __init__(self, layer_names: List[str], num_classes: Optional[int]):
        self.layer_names = layer_names
        self.num_classes = num_classes
        self.calls = [0] * len(layer_names)
        self.n: Optional[int] = None
        self.valid_sizes: Optional[List[Tuple[int, int]]] = None
        self.input_size: Optional[Tuple[int, int]] = None
        self.labels: Optional[torch.Tensor] = None
        self._crop_cache: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}

    def start(self, batch: Any, need_labels: bool, phase: str) -> Any:
        self.calls = [0] * len(self.layer_names)
        self.n = None
        self._crop_cache = {}
        self.valid_sizes = self.input_size = self.labels = None
        if not isinstance(batch, ImageBatch):
            if need_labels:
                raise ValueError(
                    f"ImageScorer.{phase}: per-class mode (num_classes={self.num_classes}) needs "
                    "each batch to be an ImageBatch with labels (the true class for fit, the "
                    "predicted class for score)"
                )
            return batch
        if batch.valid_sizes is not None:
            sizes = []
            for s in batch.valid_sizes:
                h, w = (int(v) for v in s)
                if h <= 0 or w <= 0:
                    raise ValueError(f"ImageScorer.{phase}: valid size {tuple(s)} must be positive")
                sizes.append((h, w))
            self.valid_sizes = sizes
            if batch.input_size is not None:
                H, W = (int(v) for v in batch.input_size)
            elif isinstance(batch.inputs, torch.Tensor) and batch.inputs.dim() >= 2:
                H, W = (int(v) for v in batch.inputs.shape[-2:])
            else:
                raise ValueError(
                    f"ImageScorer.{phase}: ImageBatch.valid_sizes is given but input_size is not, "
                    "and inputs is not a tensor to take it from; pass input_size=(H, W) of the "
                    "padded input"
                )
            if H <= 0 or W <= 0:
                raise ValueError(f"ImageScorer.{phase}: input_size {(H, W)} must be positive")
            self.input_size = (H, W)
        if need_labels:
            if batch.labels is None:
                raise ValueError(
                    f"ImageScorer.{phase}: per-class mode (num_classes={self.num_classes}) needs "
                    "ImageBatch.labels (the true class for fit, the predicted class for score)"
                )
            labels = torch.as_tensor(batch.labels).reshape(-1)
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise ValueError(f"ImageScorer.{phase}: labels must be integer class ids")
            labels = labels.to(device="cpu", dtype=torch.int64)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"ImageScorer.{phase}: labels must be in [0, {self.num_classes}), got "
                    f"{labels.tolist()}"
                )
            self.labels = labels
        return batch.inputs

    def set_n(self, n: int, name: str) -> None:
        if self.n is None:
            self.n = n
            if self.valid_sizes is not None and len(self.valid_sizes) != n:
                raise ValueError(
                    f"ImageScorer: layer {name!r} has {n} images in its output but the batch has "
                    f"{len(self.valid_sizes)} valid_sizes"
                )
            if self.labels is not None and len(self.labels) != n:
                raise ValueError(
                    f"ImageScorer: layer {name!r} has {n} images in its output but the batch has "
                    f"{len(self.labels)} labels"
                )
        elif n != self.n:
            raise ValueError(
                f"ImageScorer: layer {name!r} has {n} images in its first dimension but an "
                f"earlier layer had {self.n}; every hooked layer must output (N, ...) for the "
                "same N images"
            )

    def crops(self, hf: int, wf: int) -> Optional[List[Tuple[int, int]]]:
        if self.valid_sizes is None:
            return None
        key = (hf, wf)
        out = self._crop_cache.get(key)
        if out is None:
            H, W = self.input_size
            out = [
                (min(hf, max(1, -(-h * hf // H))), min(wf, max(1, -(-w * wf // W))))
                for h, w in self.valid_sizes
            ]
            self._crop_cache[key] = out
        return out

    def pool_matrices(self, hf, wf, gh, gw, dtype, device):
        key = (hf, wf, gh, gw, dtype, device)
        mats = self._crop_cache.get(key)
        if mats is None:
            crops = self.crops(hf, wf)
            if all(cr == crops[0] for cr in crops):
                crops = crops[:1]  # broadcast one pair over the batch
            Ph = torch.stack([_pool_matrix(ch, hf, gh) for ch, _ in crops])  # (n|1, gh, hf)
            Pw = torch.stack([_pool_matrix(cw, wf, gw).t() for _, cw in crops])  # (n|1, wf, gw)
            mats = (Ph.to(device=device, dtype=dtype), Pw.to(device=device, dtype=dtype))
            self._crop_cache[key] = mats
        return mats


@functools.lru_cache(maxsize=None)
def _word_chunk(num_words: int) -> Tuple[int, int]:
    """(chunk, pad): a chunk length in [32, 127] dividing num_words (+ pad zeros if none does)."""
    for c in range(127, 31, -1):
        if num_words % c == 0:
            return c, 0
    return 127, (-num_words) % 127


def _count_words(w: torch.Tensor) -> torch.Tensor:
    """Row sums of a bool (n, K) mask viewed as int64 words ``w`` (n, K/8) of 0/1 bytes.

    Much faster than ``mask.sum(1)`` on CPU (bool reductions are not vectorized): summing at
    most 127 words adds their bytes lane by lane (each byte <= 127: no carry between bytes,
    no signed overflow), then the few partial words are split into bytes and summed.
    """
    n, num_words = w.shape
    c, pad = _word_chunk(num_words)
    if pad:
        w = F.pad(w, (0, pad))
    partial = w.reshape(n, -1, c).sum(-1)
    return partial.view(torch.uint8).sum(1, dtype=torch.int64)


def _as_words(m: torch.Tensor) -> Optional[torch.Tensor]:
    """(n, K) bool -> (n, K/8) int64 view, or None when K % 8 or the layout forbids it."""
    if m.shape[1] % 8 or not m.is_contiguous() or m.shape[1] < 64:
        return None
    return m.view(torch.uint8).view(torch.int64)


@functools.lru_cache(maxsize=4096)
def _pool_matrix(crop: int, full: int, out: int) -> torch.Tensor:
    """(out, full) float64: row i averages PyTorch's adaptive-pool window i of [0, crop)."""
    P = torch.zeros(out, full, dtype=torch.float64)
    for i in range(out):
        s, e = (i * crop) // out, -(-(i + 1) * crop // out)
        P[i, s:e] = 1.0 / (e - s)
    return P


def _float32_at_least(t: float) -> float:
    """Smallest float32 >= t, so that ``x32 >= it`` equals ``float64(x32) >= t`` exactly."""
    t32 = torch.tensor(t, dtype=torch.float32)
    if float(t32) < t:
        t32 = torch.nextafter(t32, torch.tensor(math.inf, dtype=torch.float32))
    return float(t32)


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
        similarity: ``"iou"`` (default) or ``"recall"`` (``|A & B| / |B|``, B = dataset mask).
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
        if grid is not None:
            try:
                gh, gw = (int(g) for g in grid)
            except (TypeError, ValueError):
                raise ValueError(f"ImageScorer: grid must be None or (h, w), got {grid!r}") from None
            if gh <= 0 or gw <= 0 or (gh, gw) != tuple(grid):
                raise ValueError(f"ImageScorer: grid must be two positive ints, got {grid!r}")
            grid = (gh, gw)
        if num_classes is not None:
            if int(num_classes) != num_classes or int(num_classes) < 1:
                raise ValueError(f"ImageScorer: num_classes must be None or an int >= 1, got {num_classes!r}")
            num_classes = int(num_classes)
        self.model = model
        self.similarity = similarity
        self.threshold_ratio = ratio
        self.grid = grid
        self.num_classes = num_classes
        self.layer_names: List[str] = resolve_layers(model, layers)
        self._reset_fit()

    # ------------------------------------------------------------------ state
    def _reset_fit(self) -> None:
        self.layer_shapes: Optional[List[Tuple[int, ...]]] = None
        self.thresholds: Optional[torch.Tensor] = None  # (K, L) float64, K = num_classes or 1
        self.masks: Optional[List[torch.Tensor]] = None  # per layer, bool (K, *shape)
        self.class_counts: Optional[torch.Tensor] = None  # (K,) float64 images per class
        self._mask_sizes: Optional[torch.Tensor] = None  # (K, L) int64
        self._flat_masks: Optional[List[torch.Tensor]] = None
        self._t_cmp: Optional[List[List[float]]] = None
        self._warned_empty = False

    @property
    def is_fitted(self) -> bool:
        return self.masks is not None

    @property
    def _K(self) -> int:
        return self.num_classes or 1

    def mask_sizes(self) -> torch.Tensor:
        """Dataset-mask sizes (number of active neurons): int64 ``(L,)``, or ``(K, L)`` per class."""
        self._require_fitted("mask_sizes")
        return self._mask_sizes[0].clone() if self.num_classes is None else self._mask_sizes.clone()

    def num_neurons(self) -> List[int]:
        """Neurons per layer (after crop/pool), in ``layer_names`` order."""
        self._require_fitted("num_neurons")
        return [int(math.prod(s)) for s in self.layer_shapes]

    def skipped_layers(self) -> List[str]:
        """Layers whose dataset mask is empty (for every class with images): they score 0."""
        self._require_fitted("skipped_layers")
        present = self.class_counts > 0
        empty = (self._mask_sizes[present] == 0).all(0) if bool(present.any()) else torch.ones(
            len(self.layer_names), dtype=torch.bool)
        return [n for n, e in zip(self.layer_names, empty.tolist()) if e]

    def _require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                f"ImageScorer.{what}: the scorer is not fitted; call scorer.fit(labeled_batches) "
                "or ImageScorer.load(path, model) first"
            )

    def __repr__(self) -> str:
        return (
            f"ImageScorer(layers={len(self.layer_names)}, similarity={self.similarity!r}, "
            f"threshold_ratio={self.threshold_ratio}, grid={self.grid}, "
            f"num_classes={self.num_classes}, fitted={self.is_fitted})"
        )

    # ------------------------------------------------------------------ passes
    def _prepare(self, x: torch.Tensor, ctx: _BatchContext, name: str) -> torch.Tensor:
        """Crop padding / pool to the grid; returns a (n, neurons) view/tensor."""
        n = x.shape[0]
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if x.dim() == 2:
            return x
        _, c, hf, wf = x.shape
        crops = ctx.crops(hf, wf)
        if self.grid is None:
            if crops is not None and any(ch != hf or cw != wf for ch, cw in crops):
                raise ValueError(
                    f"ImageScorer: layer {name!r}: the batch has padding (valid_sizes smaller "
                    "than the input) but grid=None cannot crop it away without changing the map "
                    "shape; pass grid=(h, w) to crop and pool every map to a fixed grid"
                )
            return x.reshape(n, -1)
        gh, gw = self.grid
        if crops is None or all(cr == (hf, wf) for cr in crops):
            out = x if (hf, wf) == (gh, gw) else F.adaptive_avg_pool2d(x, (gh, gw))
            return out.reshape(n, -1)
        # crop + adaptive average pooling as two small matmuls with per-image averaging
        # matrices (zero weight on padding): vectorized over the batch, no crop copies
        Ph, Pw = ctx.pool_matrices(hf, wf, gh, gw, x.dtype, x.device)
        y = torch.matmul(x.reshape(n, c * hf, wf), Pw)  # (n, C*hf, wf) @ (n|1, wf, gw)
        y = y.view(n, c, hf, gw).transpose(1, 2).reshape(n, hf, c * gw)
        out = torch.matmul(Ph, y)  # (n|1, gh, hf) @ (n, hf, C*gw)
        return out.view(n, gh, c, gw).transpose(1, 2).reshape(n, -1)

    def _run_pass(
        self,
        batches: Iterable[Any],
        phase: str,
        on_layer: Callable[[int, torch.Tensor, _BatchContext], None],
        on_batch: Callable[[_BatchContext], None],
        need_labels: bool,
        shapes: Optional[List[Tuple[int, ...]]] = None,
    ) -> int:
        """Run the model over ``batches`` with hooks; returns the number of images seen."""
        modules = dict(self.model.named_modules())
        missing = [n for n in self.layer_names if n not in modules]
        if missing:
            raise ValueError(
                f"ImageScorer.{phase}: " + unknown_layer_message(missing[0], list(modules))
                + " (the model changed since the scorer was built?)"
            )
        targets = [modules[n] for n in self.layer_names]
        ctx = _BatchContext(self.layer_names, self.num_classes)
        names = self.layer_names

        def make_hook(idx: int):
            name = names[idx]

            def hook(module, inputs, output):
                ctx.calls[idx] += 1
                if ctx.calls[idx] > 1:
                    raise RuntimeError(
                        f"ImageScorer: module {name!r} ran {ctx.calls[idx]} times in one forward "
                        "pass (a reused module, e.g. torchvision ResNet's shared `relu`); its "
                        "output is ambiguous. Select modules that run once per forward, e.g. the "
                        "enclosing blocks (layers=r'layer\\d\\.\\d+')"
                    )
                if not isinstance(output, torch.Tensor):
                    raise TypeError(
                        f"ImageScorer: layer {name!r} returned a {type(output).__name__}, not a "
                        "tensor; hook a module that returns one (N, C, H, W) or (N, F) tensor "
                        "(e.g. a submodule of this one)"
                    )
                x = output.detach()
                if x.dim() not in (2, 4):
                    raise ValueError(
                        f"ImageScorer: layer {name!r} output has shape {tuple(x.shape)}; expected "
                        "(N, C, H, W) spatial maps or (N, F) linear outputs"
                    )
                ctx.set_n(x.shape[0], name)
                if x.shape[0] == 0:
                    return None
                xf = self._prepare(x, ctx, name)
                per_image = tuple(xf.shape[1:]) if x.dim() == 2 else (
                    (x.shape[1],) + (tuple(self.grid) if self.grid is not None else tuple(x.shape[2:])))
                if shapes is not None and per_image != shapes[idx]:
                    hint = (" With grid=None every image must give maps of the fitted size; pass "
                            "grid=(h, w) to pool maps of any size to a fixed grid."
                            if self.grid is None and x.dim() == 4 else
                            " The model differs from the one the scorer was fitted on; refit.")
                    raise ValueError(
                        f"ImageScorer.{phase}: layer {name!r} gives per-image shape {per_image} "
                        f"but the scorer was fitted with {shapes[idx]}." + hint
                    )
                on_layer(idx, xf, ctx, per_image)
                return None

            return hook

        saved_training = [(m, m.training) for m in self.model.modules()]
        saved_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        handles = []
        total = 0
        try:
            self.model.eval()
            for idx, module in enumerate(targets):
                handles.append(module.register_forward_hook(make_hook(idx)))
            with torch.no_grad():
                for batch in batches:
                    inputs = ctx.start(batch, need_labels, phase)
                    self.model(inputs)
                    not_run = [names[i] for i, c in enumerate(ctx.calls) if c == 0]
                    if not_run:
                        raise RuntimeError(
                            f"ImageScorer.{phase}: layer(s) {not_run} did not run during the "
                            "forward pass; select modules the model's forward actually calls"
                        )
                    if ctx.n:
                        on_batch(ctx)
                        total += ctx.n
        finally:
            for h in handles:
                h.remove()
            for m, mode in saved_training:
                m.training = mode
            for p, rg in saved_grad:
                if p.requires_grad != rg:
                    p.requires_grad_(rg)
        if total == 0:
            raise ValueError(
                f"ImageScorer.{phase}: the batches contained no images (an empty iterable, or "
                "only batches of zero images)"
            )
        return total

    # ------------------------------------------------------------------ fit
    def fit(self, batches: Iterable[Any], all_reduce: Optional[Callable[[torch.Tensor], Any]] = None) -> "ImageScorer":
        """Fit the dataset masks on ``batches`` (labeled images); streams, O(neurons) memory.

        ``all_reduce``: optional callable applied in place to every float64 accumulator
        (per-layer sums in ``layer_names`` order, then the per-class image counts) before the
        means are taken; pass a ``torch.distributed`` SUM all-reduce so every rank gets the
        same masks. Returns ``self``.
        """
        L, K = len(self.layer_names), self._K
        sums: List[Optional[torch.Tensor]] = [None] * L
        shapes: List[Optional[Tuple[int, ...]]] = [None] * L
        counts = torch.zeros(K, dtype=torch.float64)
        per_class = self.num_classes is not None

        def on_layer(idx, xf, ctx, per_image):
            if sums[idx] is None:
                sums[idx] = torch.zeros((K, xf.shape[1]), dtype=torch.float64, device=xf.device)
                shapes[idx] = per_image
            elif per_image != shapes[idx]:
                raise ValueError(
                    f"ImageScorer.fit: layer {self.layer_names[idx]!r} gives per-image shape "
                    f"{per_image} but earlier batches gave {shapes[idx]}; grid=None requires all "
                    "images to have equal shapes; pass grid=(h, w) to pool maps to a fixed grid"
                )
            if per_class:
                x64 = xf.to(torch.float64)
                batch_sum = x64.sum()
                if not bool(torch.isfinite(batch_sum)):
                    self._raise_nonfinite(idx, xf)
                sums[idx].index_add_(0, ctx.labels.to(xf.device), x64)
            else:
                s = xf.sum(0, dtype=torch.float64)
                if not bool(torch.isfinite(s).all()):
                    self._raise_nonfinite(idx, xf)
                sums[idx][0] += s

        def on_batch(ctx):
            if per_class:
                counts.index_add_(0, ctx.labels, torch.ones(ctx.n, dtype=torch.float64))
            else:
                counts[0] += ctx.n

        self._run_pass(batches, "fit", on_layer, on_batch, need_labels=per_class)
        accumulators = [s for s in sums] + [counts]
        if all_reduce is not None:
            for acc in accumulators:
                all_reduce(acc)
        self._finalize(sums, shapes, counts)
        return self

    def _raise_nonfinite(self, idx: int, xf: torch.Tensor) -> None:
        bad = (~torch.isfinite(xf)).sum().item()
        raise FloatingPointError(
            f"ImageScorer: layer {self.layer_names[idx]!r} produced {bad} non-finite (NaN/Inf) "
            "activation value(s); check the model weights and inputs"
        )

    def _finalize(self, sums, shapes, counts) -> None:
        K = self._K
        thresholds = torch.empty((K, len(self.layer_names)), dtype=torch.float64)
        masks = []
        present = counts > 0
        for l, s in enumerate(sums):
            mean = s.cpu() / counts.clamp(min=1).unsqueeze(1)
            mx = mean.amax(1)
            t = self.threshold_ratio * mx
            t = torch.where(present, t, torch.full_like(t, math.nan))
            m = (mean >= t.unsqueeze(1)) & present.unsqueeze(1)
            thresholds[:, l] = t
            masks.append(m.reshape((K,) + tuple(shapes[l])))
        self._set_state(list(shapes), thresholds, masks, counts.clone())
        self._warn_empty(force=True)

    def _set_state(self, shapes, thresholds, masks, class_counts) -> None:
        self.layer_shapes = [tuple(int(v) for v in s) for s in shapes]
        self.thresholds = thresholds
        self.masks = masks
        self.class_counts = class_counts
        self._flat_masks = [m.reshape(m.shape[0], -1) for m in masks]
        self._mask_sizes = torch.stack([fm.sum(1) for fm in self._flat_masks], 1).to(torch.int64)
        self._t_cmp = [[_float32_at_least(float(t)) if math.isfinite(float(t)) else math.inf
                        for t in row] for row in thresholds.t()]  # [L][K]
        self._warned_empty = False

    def _warn_empty(self, force: bool = False) -> None:
        if self._warned_empty and not force:
            return
        self._warned_empty = True
        msgs = []
        present = self.class_counts > 0
        if self.num_classes is None:
            skipped = self.skipped_layers()
            if skipped:
                msgs.append(
                    f"ImageScorer: the dataset mask of layer(s) {skipped} is empty (max mean "
                    "activation < 0?); they are skipped and contribute 0 to every score")
        else:
            absent = [k for k in range(self._K) if not bool(present[k])]
            if absent:
                msgs.append(
                    f"ImageScorer: no fitted image has class {absent}; scoring an image predicted "
                    "as one of them raises an error")
            pairs = [(self.layer_names[l], k) for k in range(self._K) if bool(present[k])
                     for l in range(len(self.layer_names)) if int(self._mask_sizes[k, l]) == 0]
            if pairs:
                msgs.append(
                    f"ImageScorer: empty dataset masks for (layer, class) {pairs}; they are "
                    "skipped and contribute 0 to the scores of images of that class")
        for msg in msgs:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

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
        L = len(self.layer_names)
        per_class = self.num_classes is not None
        dev_masks: Dict[Any, List[torch.Tensor]] = {}
        inter_parts: List[torch.Tensor] = []
        size_parts: List[torch.Tensor] = []
        label_parts: List[torch.Tensor] = []
        cur_inter: List[Optional[torch.Tensor]] = [None] * L
        cur_size: List[Optional[torch.Tensor]] = [None] * L
        present = self.class_counts > 0

        def masks_on(device):
            ms = dev_masks.get(device)
            if ms is None:
                ms = []
                for fm in self._flat_masks:
                    fm = fm.to(device).contiguous()
                    ms.append((fm, _as_words(fm)))
                dev_masks[device] = ms
            return ms

        def on_layer(idx, xf, ctx, per_image):
            total = xf.sum()
            if not bool(torch.isfinite(total)) and not bool(torch.isfinite(xf).all()):
                self._raise_nonfinite(idx, xf)
            D, Dw = masks_on(xf.device)[idx]
            if per_class:
                lab = ctx.labels.to(xf.device)
                tk = torch.tensor(self._t_cmp[idx], dtype=xf.dtype, device=xf.device)
                if xf.dtype == torch.float64:
                    tk = self.thresholds[:, idx].to(xf.device).nan_to_num(nan=math.inf)
                m = xf >= tk[lab].unsqueeze(1)
                sel = lab
            else:
                t = self._t_cmp[idx][0] if xf.dtype == torch.float32 else float(self.thresholds[0, idx])
                m = xf >= t
                sel = 0
            w = _as_words(m) if Dw is not None else None
            if w is not None:
                cur_size[idx] = _count_words(w)
                cur_inter[idx] = _count_words(w & Dw[sel])
            else:
                cur_size[idx] = m.sum(1)
                cur_inter[idx] = (m & D[sel]).sum(1)

        def on_batch(ctx):
            inter_parts.append(torch.stack([t.cpu() for t in cur_inter], 1))
            size_parts.append(torch.stack([t.cpu() for t in cur_size], 1))
            if per_class:
                lab = ctx.labels
                if not bool(present[lab].all()):
                    bad = sorted(set(lab[~present[lab]].tolist()))
                    raise ValueError(
                        f"ImageScorer.score: image(s) predicted as class {bad}, but no fitted "
                        "image had that class, so there is no mask to compare with; fit on data "
                        "covering every class or map such images to a fitted class")
                label_parts.append(lab)

        self._run_pass(batches, "score", on_layer, on_batch, need_labels=per_class,
                       shapes=self.layer_shapes)
        inter = torch.cat(inter_parts).to(torch.float64)
        isize = torch.cat(size_parts).to(torch.float64)
        if per_class:
            labels = torch.cat(label_parts)
            dsize = self._mask_sizes[labels].to(torch.float64)
        else:
            labels = None
            dsize = self._mask_sizes[0].to(torch.float64).expand_as(inter).clone()
        skipped = dsize == 0
        if self.similarity == "iou":
            denom = isize + dsize - inter
        else:
            denom = dsize
        ratio = inter / denom.clamp(min=1)
        ratio = torch.where(skipped, torch.full_like(ratio, math.nan), ratio)
        log_ratio = torch.log(ratio.clamp(min=RATIO_FLOOR))
        log_ratio = torch.where(skipped, torch.zeros_like(log_ratio), log_ratio)
        scores = log_ratio.sum(1)
        if not details:
            return scores
        return scores, {
            "layer_names": list(self.layer_names),
            "num_neurons": self.num_neurons(),
            "ratio": ratio,
            "log_ratio": log_ratio,
            "image_mask_size": isize,
            "intersection": inter,
            "dataset_mask_size": dsize,
            "labels": labels,
        }

    @staticmethod
    def explain(details: Dict[str, Any], index: int) -> str:
        """A per-layer table for image ``index`` of ``score(..., details=True)`` output."""
        rows = [f"{'layer':<32} {'neurons':>8} {'|M_l|':>8} {'|M_I|':>8} {'|M_I&M_l|':>10} "
                f"{'ratio':>8} {'log':>9}"]
        for l, name in enumerate(details["layer_names"]):
            r = float(details["ratio"][index, l])
            rows.append(
                f"{name:<32} {details['num_neurons'][l]:>8} "
                f"{int(details['dataset_mask_size'][index, l]):>8} "
                f"{int(details['image_mask_size'][index, l]):>8} "
                f"{int(details['intersection'][index, l]):>10} "
                f"{'skipped' if math.isnan(r) else format(r, '.4f'):>8} "
                f"{float(details['log_ratio'][index, l]):>9.3f}")
        rows.append(f"score = {float(details['log_ratio'][index].sum()):.4f}")
        return "\n".join(rows)

    # ------------------------------------------------------------------ save / load
    def state_dict(self) -> Dict[str, Any]:
        self._require_fitted("save")
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "layer_names": list(self.layer_names),
            "shapes": [list(s) for s in self.layer_shapes],
            "thresholds": self.thresholds.clone(),
            "masks": [m.clone() for m in self.masks],
            "class_counts": self.class_counts.clone(),
            "similarity": self.similarity,
            "threshold_ratio": self.threshold_ratio,
            "grid": list(self.grid) if self.grid is not None else None,
            "num_classes": self.num_classes,
        }

    def save(self, path: str) -> None:
        """Write the fitted scorer to ``path`` (torch.save; atomic: temp file + os.replace)."""
        state = self.state_dict()
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str, model: nn.Module, layers: LayerSpec = None) -> "ImageScorer":
        """Load a scorer saved by :meth:`save` and attach it to ``model``.

        Fails with a clear message when the file is not a scorer / has another format
        version, when a saved layer is not a module of ``model``, when ``layers`` is given and
        resolves to a different list than the saved one, or when a saved conv/linear layer's
        channel count differs from the module's.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"ImageScorer.load: cannot read {path!r} as a saved ImageScorer "
                             f"(truncated, or not written by ImageScorer.save): {e}. Delete it "
                             "and fit the scorer again.") from e
        if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
            raise ValueError(f"ImageScorer.load: {path!r} is not a file written by ImageScorer.save")
        version = state.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"ImageScorer.load: {path!r} has format version {version}, this code reads "
                f"version {FORMAT_VERSION}; refit the scorer with this version (scorer.fit + save)")
        check_scorer_state(state, path, SIMILARITIES)
        saved = list(state["layer_names"])
        modules = dict(model.named_modules())
        missing = [n for n in saved if n not in modules]
        if missing:
            details = "; ".join(unknown_layer_message(n, list(modules), "saved layer") for n in missing[:3])
            raise ValueError(
                f"ImageScorer.load: {path!r} was fitted on layers the given model does not have "
                f"({len(missing)} of {len(saved)} missing): {details}. Pass the same module the "
                "scorer was fitted on (e.g. model.backbone vs the full model, or model.module for "
                "a DistributedDataParallel wrapper), or refit the scorer on this model.")
        if layers is not None:
            wanted = resolve_layers(model, layers)
            if wanted != saved:
                only_saved = [n for n in saved if n not in wanted]
                only_wanted = [n for n in wanted if n not in saved]
                raise ValueError(
                    f"ImageScorer.load: the layer list differs from the one {path!r} was fitted "
                    f"with: saved-only {only_saved}, requested-only {only_wanted}"
                    + (" (same layers, different order)" if not only_saved and not only_wanted else "")
                    + ". Use the saved layers (layers=None) or refit with the new list.")
        shapes = [tuple(int(v) for v in s) for s in state["shapes"]]
        for name, shape in zip(saved, shapes):
            mod = modules[name]
            expected = None
            if isinstance(mod, nn.Conv2d) and len(shape) == 3:
                expected = mod.out_channels
            elif isinstance(mod, nn.Linear) and len(shape) == 1:
                expected = mod.out_features
            if expected is not None and expected != shape[0]:
                raise ValueError(
                    f"ImageScorer.load: layer {name!r} was fitted with {shape[0]} channels but the "
                    f"model's module has {expected}; this is a different model, refit the scorer")
        grid = tuple(state["grid"]) if state["grid"] is not None else None
        scorer = cls(model, layers=saved, similarity=state["similarity"],
                     threshold_ratio=state["threshold_ratio"], grid=grid,
                     num_classes=state["num_classes"])
        scorer._set_state(shapes, state["thresholds"].to(torch.float64),
                          [m.to(torch.bool) for m in state["masks"]],
                          state["class_counts"].to(torch.float64))
        return scorer
