"""Evaluation: VOC AP with per-class numbers, and pseudo-label quality."""
from .voc import PerClassVOCEvaluator, ap50_of  # noqa: F401
