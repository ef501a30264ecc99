"""Evaluation: VOC AP with per-class numbers, and pseudo-label quality."""
from .voc import PerClassVOCEvaluator  # noqa: F401
