"""imagescore-det: Image Score pseudo-label selection for Detectron2.

Importing this package is light: it imports neither Detectron2 nor OpenCV.

* ``imagescore_det.scoring``: the Image Score core, plain PyTorch.
* ``imagescore_det.modeling``: importing it registers the VGG16 backbone and box head in
  Detectron2's registries.
* ``imagescore_det.data``: importing it registers the project's datasets (lazily; nothing is
  read from disk until ``DatasetCatalog.get``), as ``detectron2.data.datasets.builtin`` does.
* ``imagescore_det.engine``: config loading, the trainer and the selection round; importing
  it imports ``modeling`` and ``data``, so a tool needs only that import.

``add_imagescore_config`` is importable from here, as in Detectron2's projects
(``from imagescore_det import add_imagescore_config``); it imports Detectron2 on first use.
"""
__version__ = "0.1.0"


def __getattr__(name):  # PEP 562: Detectron2 is imported only when its glue is asked for
    if name == "add_imagescore_config":
        from .config import add_imagescore_config

        return add_imagescore_config
    raise AttributeError(f"module 'imagescore_det' has no attribute {name!r}")
