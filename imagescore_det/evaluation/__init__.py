"""Evaluation: VOC AP with per-class numbers, and pseudo-label quality.

``PerClassVOCEvaluator`` and ``ap50_of`` (Detectron2) are imported on first use, so that the
plain-NumPy modules (``detections``, ``bootstrap``: ``tools/compare_runs.py``) load without
Detectron2 or torch.
"""

__all__ = ["PerClassVOCEvaluator", "ap50_of"]


def __getattr__(name):
    if name in __all__:
        from . import voc

        return getattr(voc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
