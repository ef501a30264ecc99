"""Models registered in Detectron2's registries (importing this module registers them)."""
from .vgg import VGG16, VGG16BoxHead, build_vgg16_backbone  # noqa: F401
