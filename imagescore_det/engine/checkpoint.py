"""The one checkpoint-fit policy: a DetectionCheckpointer that refuses checkpoints of another model."""
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer

from ..utils import atomic_write_text
from .safe_load import (FORMAT_KEY, FORMAT_VERSION, LAST_CHECKPOINT, CheckpointFileError,
                        atomic_torch_save, check_checkpoint, load_pkl_weights, resume_path,
                        torch_load_weights_only)

logger = logging.getLogger(__name__)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not belong to the configured model."""


def _config_hint(path, config_file):
    saved = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    hint = (f"Pass --config-file the config that trained {path} (with the same KEY VALUE "
            "overrides)")
    if os.path.isfile(saved):
        hint += f"; the training run saved it as {saved}"
    return hint + f", or MODEL.WEIGHTS a checkpoint trained with {config_file}."


class CheckedCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, but a checkpoint that does not fit stops with an error.

    Detectron2 only logs a warning when a checkpoint's tensors do not fit, then trains or
    evaluates a model that is silently (partly) random.

    * ``strict=False`` (training, fine-tuning): heads missing from an ImageNet checkpoint,
      or a class-count mismatch in the box predictor, load with Detectron2's warning. What
      stops is a checkpoint that fits nothing of the model, or whose *backbone* tensors
      have other shapes (another backbone or width), before any training time is spent.
    * ``strict=True`` (scoring or evaluating a trained detector): every tensor of the model
      must be in the checkpoint with its shape; keys the model does not use only warn.

    ``config_file`` names the config in the error message's fix.

    Files (see :mod:`.safe_load`): checkpoints are saved atomically (temporary file, then
    rename; ``last_checkpoint`` too) with their format version; ``.pth`` files are read with
    ``torch.load(weights_only=True)`` and ``.pkl`` weights with an unpickler that builds
    NumPy arrays only; ``--resume`` reads only a ``.pth`` in ``OUTPUT_DIR`` named by
    ``last_checkpoint``, must fit the model exactly, and refuses a truncated, hand-edited,
    non-finite or other-version checkpoint with the file and what to delete.
    """

    def __init__(self, model, save_dir="", *, strict=False, config_file="the config",
                 **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict
        self.config_file = config_file
        self._loading_path = "the checkpoint"
        self._resuming = False

    # ------------------------------------------------------------------ saving
    def save(self, name, **kwargs):
        """fvcore's ``Checkpointer.save``, atomic, with :data:`FORMAT_KEY`."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data[FORMAT_KEY] = FORMAT_VERSION
        basename = f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", os.path.join(self.save_dir, basename))
        atomic_torch_save(data, os.path.join(self.save_dir, basename))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT), last_filename_basename)

    # ------------------------------------------------------------------ loading
    def resume_or_load(self, path, *, resume=True):
        if resume and self.has_checkpoint():
            self._resuming = True
            try:
                return self.load(resume_path(self.save_dir))
            finally:
                self._resuming = False
        return self.load(path, checkpointables=[])

    def load(self, path, *args, **kwargs):
        self._loading_path = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            if self._resuming:  # unreachable through resume_path; kept as the rule
                raise CheckpointFileError(f"--resume reads only .pth checkpoints, not {filename}")
            return load_pkl_weights(filename)
        return super()._load_file(filename)

    def _torch_load(self, f):
        return torch_load_weights_only(f, self._resuming)

    def _load_model(self, checkpoint):
        path = self._loading_path
        check_checkpoint(checkpoint, path, self._resuming)
        incompatible = super()._load_model(checkpoint)
        if self._resuming:
            self._check_resumed(incompatible, path)
            return incompatible
        if self.strict:
            self._check_strict(incompatible, path)
            return incompatible
        model_keys = self.model.state_dict().keys()
        loaded = len(model_keys) - len(incompatible.missing_keys)
        bad_backbone = [(k, a, b) for k, a, b in incompatible.incorrect_shapes
                        if k.startswith("backbone.")]
        if loaded <= 0 or bad_backbone:
            detail = (f"{len(bad_backbone)} backbone tensors have other shapes, e.g. "
                      f"{bad_backbone[0][0]}: checkpoint {bad_backbone[0][1]} vs model "
                      f"{bad_backbone[0][2]}" if bad_backbone else
                      "none of its tensors matches a parameter of the model")
            raise CheckpointMismatchError(
                f"Checkpoint {path} does not belong to the configured model: {detail}. "
                "Use the config the checkpoint was trained with (its OUTPUT_DIR has "
                "config.yaml), or point MODEL.WEIGHTS at a checkpoint of this model.")
        return incompatible

    def _check_resumed(self, incompatible, path):
        """A resumed checkpoint was written by this run: every tensor must fit."""
        wrong_shape = {key for key, _, _ in incompatible.incorrect_shapes}
        missing = [key for key in incompatible.missing_keys if key not in wrong_shape]
        if not incompatible.incorrect_shapes and not missing:
            return
        lines = [f"--resume: checkpoint {path} (named by {LAST_CHECKPOINT}) was written by "
                 "another model than this config builds:"]
        lines += [f"  {key}: shape {tuple(a)} in the checkpoint, {tuple(b)} in the model"
                  for key, a, b in incompatible.incorrect_shapes[:5]]
        if missing:
            lines.append(f"  missing from the checkpoint: {', '.join(missing[:5])}"
                         + (f" ... ({len(missing)} in all)" if len(missing) > 5 else ""))
        lines.append("Resume with the config and KEY VALUE overrides of the run that wrote it, "
                     "or train in a new OUTPUT_DIR (or delete the model_*.pth files and "
                     f"{LAST_CHECKPOINT} in {os.path.dirname(os.path.abspath(path))} to start "
                     "over there).")
        raise CheckpointMismatchError("\n".join(lines))

    def _check_strict(self, incompatible, path):
        # a key whose shape differs is dropped from the checkpoint, so it is also "missing"
        wrong_shape = {key for key, _, _ in incompatible.incorrect_shapes}
        missing = [key for key in incompatible.missing_keys if key not in wrong_shape]
        if incompatible.incorrect_shapes or missing:
            lines = [f"Checkpoint {path} does not fit the model built from {self.config_file}:"]
            for key, shape_ckpt, shape_model in incompatible.incorrect_shapes[:8]:
                lines.append(f"  {key}: shape {tuple(shape_ckpt)} in the checkpoint, "
                             f"{tuple(shape_model)} in the model")
            if len(incompatible.incorrect_shapes) > 8:
                lines.append(f"  ... {len(incompatible.incorrect_shapes)} shape mismatches in all")
            if missing:
                more = f" ... ({len(missing)} in all)" if len(missing) > 8 else ""
                lines.append(f"  missing from the checkpoint: {', '.join(missing[:8])}{more}")
            lines.append(_config_hint(path, self.config_file))
            raise CheckpointMismatchError("\n".join(lines))
        if incompatible.unexpected_keys:
            logger.warning("Checkpoint %s has %d keys the model does not use (e.g. %s)", path,
                           len(incompatible.unexpected_keys), incompatible.unexpected_keys[0])
