"""Mixed precision for the selection passes (``SOLVER.AMP.ENABLED``).

Training under ``SOLVER.AMP.ENABLED`` runs in Detectron2's ``AMPTrainer`` (float16 autocast
on CUDA). The passes of a selection round (the backbone passes that fit the mask and score
the pool, the detector passes that pseudo-label) run under the same switch, through
:func:`inference_autocast`:

* on CUDA: ``torch.autocast("cuda")``, float16, as ``AMPTrainer`` trains;
* on CPU: ``torch.autocast("cpu")``, bfloat16 (CPU autocast's only low-precision type; it is
  how the tests run this path without a GPU).

The scorer itself does not run in half precision: its forward hooks turn autocast off and
widen each activation exactly to float32 (see ``imagescore_det/scoring/passes.py``), the
means are accumulated in float64 and thresholds are compared exactly, so only the model's
own activations carry half-precision rounding.
"""
import contextlib

import torch

__all__ = ["model_device", "inference_autocast"]


def model_device(model):
    """The device of ``model`` (Detectron2 meta-architectures have ``.device``)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def inference_autocast(cfg, model):
    """``torch.autocast`` on ``model``'s device when ``cfg.SOLVER.AMP.ENABLED``, else nothing.

    The low-precision type is autocast's default for the device (float16 on CUDA, bfloat16 on
    CPU). ``SOLVER.AMP.PRECISION`` is honoured when a Detectron2 config has it.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return contextlib.nullcontext()
    device_type = model_device(model).type
    precision = getattr(cfg.SOLVER.AMP, "PRECISION", None)
    if precision:
        return torch.autocast(device_type=device_type, dtype=getattr(torch, str(precision)))
    return torch.autocast(device_type=device_type)
