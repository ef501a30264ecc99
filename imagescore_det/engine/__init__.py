"""Detectron2 glue: config loading, the Image Score hook and the trainer."""
from .config_loading import ConfigError, get_imagescore_cfg, load_config  # noqa: F401
from .hook import ImageScoreHook  # noqa: F401
from .trainer import Trainer  # noqa: F401
from .checkpoint import CheckedCheckpointer, CheckpointMismatchError  # noqa: F401
