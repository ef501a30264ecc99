"""Bit-count and pooling kernels: mask popcounts over int64 words, adaptive-pool matrices."""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["_as_words", "_count_words", "_word_chunk", "_pool_matrix", "_float32_at_least",
           "mask_counts", "to_device"]


@functools.lru_cache(maxsize=None)
def _word_chunk(num_words: int) -> Tuple[int, int]:
    """(chunk, pad): a chunk length in [32, 127] dividing num_words (+ pad zeros if none does)."""
    for chunk in range(127, 31, -1):
        if num_words % chunk == 0:
            return chunk, 0
    return 127, (-num_words) % 127


def _count_words(words: torch.Tensor) -> torch.Tensor:
    """Row sums of a bool (n, K) mask viewed as int64 words ``words`` (n, K/8) of 0/1 bytes.

    Much faster than ``mask.sum(1)`` on CPU (bool reductions are not vectorized): summing at
    most 127 words adds their bytes lane by lane (each byte <= 127: no carry between bytes,
    no signed overflow), then the few partial words are split into bytes and summed.
    """
    num_rows, num_words = words.shape
    chunk, pad = _word_chunk(num_words)
    if pad:
        words = F.pad(words, (0, pad))
    partial = words.reshape(num_rows, -1, chunk).sum(-1)
    return partial.view(torch.uint8).sum(1, dtype=torch.int64)


def _as_words(mask: torch.Tensor) -> Optional[torch.Tensor]:
    """(n, K) bool -> (n, K/8) int64 view, or None when K % 8 or the layout forbids it."""
    if mask.shape[1] % 8 or not mask.is_contiguous() or mask.shape[1] < 64:
        return None
    return mask.view(torch.uint8).view(torch.int64)


def mask_counts(
    image_masks: torch.Tensor,
    dataset_masks: torch.Tensor,
    dataset_words: Optional[torch.Tensor],
    select: Union[int, torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(|M_I|, |M_I & M|)`` per row of the bool ``image_masks`` (n, K).

    ``dataset_masks`` is (groups, K) bool and ``dataset_words`` its :func:`_as_words` view
    (or None); ``select`` picks the dataset mask: a row index shared by every image, or one
    index per image.
    """
    image_words = _as_words(image_masks) if dataset_words is not None else None
    if image_words is not None:
        return _count_words(image_words), _count_words(image_words & dataset_words[select])
    return image_masks.sum(1), (image_masks & dataset_masks[select]).sum(1)


@functools.lru_cache(maxsize=4096)
def _pool_matrix(crop: int, full: int, out: int) -> torch.Tensor:
    """(out, full) float64: row i averages PyTorch's adaptive-pool window i of [0, crop)."""
    matrix = torch.zeros(out, full, dtype=torch.float64)
    for row in range(out):
        start, end = (row * crop) // out, -(-(row + 1) * crop // out)
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


def _float32_at_least(threshold: float) -> float:
    """Smallest float32 >= threshold, so ``x32 >= it`` equals ``float64(x32) >= threshold``."""
    threshold32 = torch.tensor(threshold, dtype=torch.float32)
    if float(threshold32) < threshold:
        threshold32 = torch.nextafter(threshold32, torch.tensor(math.inf, dtype=torch.float32))
    return float(threshold32)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor.to(device)`` without a host sync when a small CPU tensor goes to a GPU.

    A plain copy from pageable host memory to a CUDA device waits for every kernel queued
    before it, so one in a forward hook stalls the host once per layer. From pinned memory
    with ``non_blocking=True`` the copy is queued like a kernel (PyTorch's pinned-memory
    allocator keeps the buffer alive until the copy has run). Other devices: ``.to``.
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
