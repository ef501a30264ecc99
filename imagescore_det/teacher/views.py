"""The two views of an unlabeled image.

Weak: Detectron2's training mapper (``DatasetMapper(cfg, is_train=True)``: the training
resize and flip). Strong: photometric changes on top of the weak view (Unbiased Teacher's
list: colour jitter, grayscale, Gaussian blur, three random erasings), from torchvision's v2
transforms. Nothing moves a pixel, so the teacher's boxes on the weak view are the student's
targets on the strong view as they are. The draws come from a generator seeded by
``(seed, iteration, position in the batch)``: the same view in every process and on a
resumed run.
"""
import hashlib

import torch
from torchvision.transforms import v2


def _strong_transform():
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=0.5),
        v2.RandomErasing(p=0.7, scale=(0.05, 0.2), ratio=(0.3, 3.3), value="random"),
        v2.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.1, 6.0), value="random"),
        v2.RandomErasing(p=0.3, scale=(0.02, 0.2), ratio=(0.05, 8.0), value="random"),
    ])


STRONG = _strong_transform()


def view_seed(seed, iteration, index):
    """The seed of image ``index`` of the unlabeled batch of ``iteration``."""
    digest = hashlib.sha256(f"imagescore-strong/{seed}/{iteration}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2 ** 63)


def strong_view(image, seed, input_format="BGR"):
    """The strong view of a weak-view image (C x H x W uint8, Detectron2's ``"image"``), of
    the same shape and dtype. ``seed``: :func:`view_seed`. The global random state is left as
    it was."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"strong_view takes a 3 x H x W uint8 image, got {tuple(image.shape)} "
                         f"{image.dtype}")
    rgb = image.flip(0) if input_format == "BGR" else image
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = STRONG(rgb.float() / 255.0)
    out = (out.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out.flip(0) if input_format == "BGR" else out
