"""Detectron2 glue: config loading, the Image Score hook, the selection round and the trainer.

Importing it registers the project's Detectron2 components (``imagescore_det.modeling``)
and datasets (``imagescore_det.data``), so tools need no other import.
"""
from .. import data as _data  # noqa: F401  (registers the synthetic_voc_* / voc07real_* datasets)
from .. import modeling as _modeling  # noqa: F401  (registers the VGG16 backbone and box head)
from .config_loading import ConfigError, get_imagescore_cfg, load_config  # noqa: F401
from .hook import ImageScoreHook  # noqa: F401
from .trainer import Trainer  # noqa: F401
from .checkpoint import CheckedCheckpointer, CheckpointMismatchError  # noqa: F401
