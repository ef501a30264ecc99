"""One pass of a model over batches, with forward hooks that hand each layer's output on."""
from __future__ import annotations

import contextlib

from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .batches import BatchContext, flatten_layer_output
from .layers import unknown_layer_message

__all__ = ["run_pass"]

LayerCallback = Callable[[int, torch.Tensor, BatchContext, Tuple[int, ...]], None]


def _checked_output(name: str, ctx: BatchContext, output: Any) -> torch.Tensor:
    """The hooked module's output, detached, after checking it is usable."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"ImageScorer: layer {name!r} returned a {type(output).__name__}, not a "
            "tensor; hook a module that returns one (N, C, H, W) or (N, F) tensor "
            "(e.g. a submodule of this one)"
        )
    output = output.detach()
    if output.dim() not in (2, 4):
        raise ValueError(
            f"ImageScorer: layer {name!r} output has shape {tuple(output.shape)}; expected "
            "(N, C, H, W) spatial maps or (N, F) linear outputs"
        )
    ctx.set_num_images(output.shape[0], name)
    return output


def _check_shape(phase: str, name: str, per_image, fitted, grid, spatial: bool) -> None:
    if per_image == fitted:
        return
    hint = (" With grid=None every image must give maps of the fitted size; pass "
            "grid=(h, w) to pool maps of any size to a fixed grid."
            if grid is None and spatial else
            " The model differs from the one the scorer was fitted on; refit.")
    raise ValueError(
        f"ImageScorer.{phase}: layer {name!r} gives per-image shape {per_image} "
        f"but the scorer was fitted with {fitted}." + hint
    )


def _no_autocast(device_type: str):
    """A context that turns autocast off on ``device_type`` if it is on (else does nothing)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # a device type autocast does not know
        enabled = False
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


def run_pass(
    model: nn.Module,
    layer_names: List[str],
    batches: Iterable[Any],
    phase: str,
    on_layer: LayerCallback,
    on_batch: Callable[[BatchContext], None],
    *,
    grid: Optional[Tuple[int, int]],
    num_classes: Optional[int],
    need_labels: bool,
    shapes: Optional[List[Tuple[int, ...]]] = None,
) -> int:
    """Run ``model`` over ``batches`` with hooks; returns the number of images seen.

    For each batch, every hooked layer's output is cropped/pooled to ``(n, neurons)`` and
    passed to ``on_layer(layer_index, activations, ctx, per_image_shape)``; then
    ``on_batch(ctx)`` runs once the forward is done. ``shapes``: the fitted per-image
    shapes to check against (score). The model runs in eval mode under ``no_grad``; hooks,
    train/eval flags and ``requires_grad`` are restored afterwards, also on errors.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layer_names if name not in modules]
    if missing:
        raise ValueError(
            f"ImageScorer.{phase}: " + unknown_layer_message(missing[0], list(modules))
            + " (the model changed since the scorer was built?)"
        )
    ctx = BatchContext(layer_names, num_classes)

    def make_hook(idx: int):
        name = layer_names[idx]

        def hook(module, inputs, output):
            ctx.calls[idx] += 1
            if ctx.calls[idx] > 1:
                raise RuntimeError(
                    f"ImageScorer: module {name!r} ran {ctx.calls[idx]} times in one forward "
                    "pass (a reused module, e.g. torchvision ResNet's shared `relu`); its "
                    "output is ambiguous. Select modules that run once per forward, e.g. the "
                    "enclosing blocks (layers=r'layer\\d\\.\\d+')"
                )
            output = _checked_output(name, ctx, output)
            if output.shape[0] == 0:
                return None
            # Under torch.autocast (SOLVER.AMP.ENABLED) the model's own ops run in half
            # precision, but the scorer's must not: the crop+pool matmuls would round the
            # pooled maps to bf16/fp16. Half activations are widened exactly to float32 in
            # flatten_layer_output and everything after runs in float32/float64.
            with _no_autocast(output.device.type):
                _on_output(idx, name, output)
            return None

        return hook

    def _on_output(idx: int, name: str, output: torch.Tensor) -> None:
        activations = flatten_layer_output(output, ctx, grid, name)
        spatial = output.dim() == 4
        per_image = tuple(activations.shape[1:]) if not spatial else (
            (output.shape[1],) + (tuple(grid) if grid is not None else tuple(output.shape[2:])))
        if shapes is not None:
            _check_shape(phase, name, per_image, shapes[idx], grid, spatial)
        on_layer(idx, activations, ctx, per_image)

    saved_training = [(module, module.training) for module in model.modules()]
    saved_grad = [(param, param.requires_grad) for param in model.parameters()]
    handles = []
    total = 0
    try:
        model.eval()
        for idx, name in enumerate(layer_names):
            handles.append(modules[name].register_forward_hook(make_hook(idx)))
        with torch.no_grad():
            for batch in batches:
                model(ctx.start(batch, need_labels, phase))
                not_run = [layer_names[i] for i, calls in enumerate(ctx.calls) if calls == 0]
                if not_run:
                    raise RuntimeError(
                        f"ImageScorer.{phase}: layer(s) {not_run} did not run during the "
                        "forward pass; select modules the model's forward actually calls"
                    )
                if ctx.num_images:
                    on_batch(ctx)
                    total += ctx.num_images
    finally:
        for handle in handles:
            handle.remove()
        for module, training in saved_training:
            module.training = training
        for param, requires_grad in saved_grad:
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)
    if total == 0:
        raise ValueError(
            f"ImageScorer.{phase}: the batches contained no images (an empty iterable, or "
            "only batches of zero images)"
        )
    return total
