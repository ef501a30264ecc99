"""The labeled-fraction split (``IMAGE_SCORE.SPLIT``, ``data/split.py``) at trainer start:
made and checked before the first iteration, its record ``OUTPUT_DIR/data_split.json``
(settings, derived names, image ids, the labeled part's class balance) written atomically,
and a resumed run held to the split it was trained on."""
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..data.split import SplitError, log_class_balance, make_split
from ..utils import atomic_write_json, json_plain, read_json_object
from .config_loading import ConfigError
from .consistency import from_rank0

logger = logging.getLogger(__name__)

RECORD = "data_split.json"
SETTINGS = (("source", "DATASET"), ("percent", "PERCENT"), ("count", "COUNT"), ("seed", "SEED"))


def prepare_split(cfg):
    """The split's record (a dict, see ``Split.record``), or None without a split. Raises
    :class:`ConfigError` when the split cannot be made (no pool or labeled image left, a
    class with no labeled image, a source without annotations)."""
    settings = cfg.IMAGE_SCORE.SPLIT
    if not settings.DATASET:
        return None
    try:
        split = make_split(settings.DATASET, settings.PERCENT, settings.COUNT, settings.SEED)
    except SplitError as e:
        raise ConfigError(str(e)) from None
    classes = list(MetadataCatalog.get(settings.DATASET).get("thing_classes", None) or [])
    log_class_balance(split, classes)
    return json_plain(split.record(classes))


def split_mismatch(previous, record, path):
    """Why a resumed run's split differs from the one recorded in ``path`` (None: it does
    not)."""
    fix = ("Resume with the recorded settings, or train this split in a new OUTPUT_DIR (or "
           "without --resume).")
    if record is None:
        return (f"This run was trained on the split of '{previous['source']}' recorded in "
                f"{path}, but IMAGE_SCORE.SPLIT.DATASET is empty now. Set IMAGE_SCORE.SPLIT "
                f"as recorded there. {fix}")
    for field, key in SETTINGS:
        if previous.get(field) != record[field]:
            return (f"IMAGE_SCORE.SPLIT.{key} is {record[field]!r}, but this run was trained "
                    f"on the split with {key} {previous.get(field)!r} (recorded in {path}): "
                    f"a resumed run must keep its labeled set. {fix}")
    for part in ("labeled_ids", "unlabeled_ids"):
        if previous.get(part) != record[part]:
            return (f"The split's {part.split('_')[0]} images differ from those recorded in "
                    f"{path} with the same IMAGE_SCORE.SPLIT settings: the source dataset "
                    f"'{record['source']}' changed since. Restore it, or start a new OUTPUT_DIR.")
    return None


def check_and_write_split(cfg, record, resumed):
    """Before the first iteration: a resumed run's split must be the recorded one
    (:class:`ConfigError` naming the setting otherwise); then the record is written."""
    path = os.path.join(cfg.OUTPUT_DIR, RECORD)
    if resumed:
        previous = from_rank0(lambda: read_json_object(
            path, "the split record", f"Delete {path} to record this run's split again.",
            ConfigError) if os.path.isfile(path) else None)
        why = split_mismatch(previous, record, path) if previous is not None else None
        if why:
            raise ConfigError(why)
    if record is not None and comm.is_main_process():
        atomic_write_json(path, record)
        logger.info("Split ids and class balance written to %s", path)
