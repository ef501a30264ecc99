"""imagescore-det: Image Score pseudo-label selection for Detectron2.

``imagescore_det.scoring`` is pure PyTorch and usable without Detectron2. Importing the
package with Detectron2 installed also registers the project's components in Detectron2's
registries (the VGG16 backbone and box head) and exposes :func:`add_imagescore_config`.
"""
__version__ = "0.1.0"

try:
    import detectron2  # noqa: F401
except ImportError:  # scoring core only
    pass
else:
    from .config import add_imagescore_config  # noqa: F401
    from . import data  # noqa: F401  (registers the synthetic_voc_* / voc07real_* datasets)
    from . import modeling  # noqa: F401  (registers backbone / box head)
