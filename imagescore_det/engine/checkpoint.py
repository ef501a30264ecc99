"""A DetectionCheckpointer that refuses a checkpoint made for another model."""
from detectron2.checkpoint import DetectionCheckpointer


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not belong to the configured model."""


class CheckedCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, but a checkpoint of another model stops with an error.

    Detectron2 only logs a warning when a checkpoint's tensors do not fit, then trains or
    evaluates a model that is silently (partly) random. Fine-tuning still works as usual:
    heads missing from an ImageNet checkpoint, or a class-count mismatch in the box
    predictor, load with Detectron2's warning. What stops here is a checkpoint that fits
    nothing of the model, or whose *backbone* tensors have other shapes (another backbone
    or width), before any training time is spent.
    """

    def load(self, path, *args, **kwargs):
        self._loading_path = path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        model_keys = self.model.state_dict().keys()
        loaded = len(model_keys) - len(incompatible.missing_keys)
        bad_backbone = [(k, a, b) for k, a, b in incompatible.incorrect_shapes
                        if k.startswith("backbone.")]
        path = getattr(self, "_loading_path", "the checkpoint")
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
