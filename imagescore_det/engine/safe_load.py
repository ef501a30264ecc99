"""Reading checkpoints without trusting them: what :class:`~.checkpoint.CheckedCheckpointer`
uses to refuse truncated, foreign, hand-edited or other-version files with the fix.

* ``.pth`` files are read with ``torch.load(weights_only=True)`` only: tensors and plain
  containers, never code.
* Detectron2 / Caffe2 ``.pkl`` weights are pickles of NumPy arrays. Detectron2 reads them
  with a bare ``pickle.load``, which runs whatever the file says; here they go through
  :class:`WeightsUnpickler`, which builds only dicts, lists, strings, numbers and NumPy
  arrays. And a ``.pkl`` is read only from a path the user named (``MODEL.WEIGHTS``), never
  from ``OUTPUT_DIR/last_checkpoint``.
* Checkpoints this project writes carry :data:`FORMAT_KEY` (the format version); a resumed
  checkpoint of another format is refused.
"""
import importlib
import os
import pickle
import re

import numpy as np
import torch

from ..utils import atomic_write


FORMAT_KEY = "imagescore_checkpoint_format"
FORMAT_VERSION = 1
LAST_CHECKPOINT = "last_checkpoint"


class CheckpointFileError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


def _numpy_attr(module, name):
    # pickles from NumPy 1 name numpy.core.*, NumPy 2 renamed it numpy._core.*
    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} is not available")


_ALLOWED = {
    ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class WeightsUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data and NumPy arrays only: any other global (a
    function or class a pickle would call, e.g. ``os.system``) is refused, not run."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a weights file (only NumPy "
                "arrays and plain containers are)")
        if module.startswith("numpy"):
            return _numpy_attr(module, name)
        return super().find_class(module, name)


def load_pkl_weights(path):
    """Detectron2's ``DetectionCheckpointer._load_file`` for ``.pkl``, with :class:`WeightsUnpickler`."""
    try:
        with open(path, "rb") as f:
            data = WeightsUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CheckpointFileError(
            f"Weights file {path} was refused: {e}. A Detectron2 .pkl holds NumPy arrays only; "
            "this one holds something else, so it was not unpickled. Use weights from a "
            "trusted source (e.g. tools/convert_vgg16_to_d2.py output).") from None
    except (EOFError, ValueError, TypeError, OSError) as e:
        raise CheckpointFileError(
            f"Weights file {path} cannot be read ({type(e).__name__}: {e}): truncated or not "
            "a Detectron2 .pkl. Download or convert it again.") from None
    if not isinstance(data, dict):
        raise CheckpointFileError(f"Weights file {path} holds a {type(data).__name__}, not a "
                                  "dict of arrays. Download or convert it again.")
    if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
        return data
    if "blobs" in data:  # Caffe2 / Detectron1 detection models
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not str(k).endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def torch_load_weights_only(path, resuming):
    """``torch.load(path, weights_only=True)``, errors turned into what is wrong and the fix."""
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointFileError(
            f"Checkpoint {path} holds Python objects other than tensors and plain containers, "
            f"which weights-only loading refuses ({str(e).splitlines()[0]}). Checkpoints written "
            f"by Detectron2's or this project's trainer never do: it was edited or comes from "
            f"elsewhere. {_fix(path, resuming)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointFileError(
            f"Checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}): "
            "it is truncated (a run killed while writing it, a full disk, an interrupted copy) "
            f"or not a PyTorch checkpoint. {_fix(path, resuming)}") from None


def check_checkpoint(checkpoint, path, resuming):
    """Refuse a loaded checkpoint whose structure was edited, whose tensors are not finite,
    or (when resuming) that another format version wrote."""
    fix = _fix(path, resuming)
    if not isinstance(checkpoint, dict):
        raise CheckpointFileError(f"Checkpoint {path} holds a {type(checkpoint).__name__}, not a "
                                  f"dict. {fix}")
    model = checkpoint.get("model")
    if not isinstance(model, dict) or not model:
        raise CheckpointFileError(f"Checkpoint {path} has no 'model' dict of tensors. {fix}")
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray)):
            raise CheckpointFileError(
                f"Checkpoint {path}: model entry {key!r} is a {type(value).__name__}, not a "
                f"tensor (edited by hand?). {fix}")
        if isinstance(value, np.ndarray):
            finite = value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
        else:
            finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        if not finite:
            raise CheckpointFileError(
                f"Checkpoint {path}: tensor {key!r} holds NaN or infinite values (saved by a "
                f"run that diverged, or edited). {fix}")
    if not resuming:
        return
    version = checkpoint.get(FORMAT_KEY, FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointFileError(
            f"Checkpoint {path} has {FORMAT_KEY} {version!r}; this version of imagescore-det "
            f"writes and resumes {FORMAT_VERSION}. Resume it with the version that wrote it, "
            f"or start again. {fix}")
    iteration = checkpoint.get("iteration")
    if iteration is not None and (isinstance(iteration, bool) or not isinstance(iteration, int)
                                  or iteration < 0):
        raise CheckpointFileError(f"Checkpoint {path} has iteration {iteration!r}, not an "
                                  f"iteration number (edited by hand?). {fix}")


def _fix(path, resuming):
    directory = os.path.dirname(os.path.abspath(path))
    if not resuming:
        return f"Point MODEL.WEIGHTS at a good checkpoint instead of {path}."
    names = checkpoints_in(directory)
    broken = os.path.basename(path)
    others = [name for name in names if name != broken]
    older = names[:names.index(broken)] if broken in names else []
    if others:
        which = "the previous checkpoint's" if older else "another checkpoint's"
        return (f"Delete {path} and write {which} name ({(older or others)[-1]}) into "
                f"{os.path.join(directory, LAST_CHECKPOINT)} to resume from it, or delete "
                f"{LAST_CHECKPOINT} to start over.")
    return (f"Delete {path} and {os.path.join(directory, LAST_CHECKPOINT)} to start this "
            "OUTPUT_DIR over.")


def checkpoints_in(directory):
    """The ``model_*.pth`` files of a directory, oldest iteration first (final last)."""
    try:
        names = [n for n in os.listdir(directory) if re.fullmatch(r"model_(\d+|final)\.pth", n)]
    except OSError:
        return []
    return sorted(names, key=lambda n: (n == "model_final.pth", n))


def resume_path(save_dir):
    """The checkpoint ``save_dir/last_checkpoint`` names, checked to be a ``.pth`` file in
    ``save_dir`` (a hand-edited name cannot make a resume read any other file)."""
    tag = os.path.join(save_dir, LAST_CHECKPOINT)
    try:
        with open(tag) as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointFileError(f"Cannot read {tag}: {e}. Delete it to start this OUTPUT_DIR "
                                  "over, or write the name of a checkpoint into it.") from None
    available = checkpoints_in(save_dir)
    hint = (f"Write the name of one of {available} into it, or delete it to start over."
            if available else "Delete it to start this OUTPUT_DIR over.")
    if (not name or os.path.basename(name) != name or name in (".", "..")
            or not name.endswith(".pth")):
        raise CheckpointFileError(
            f"{tag} names {name!r}, which is not a .pth checkpoint file in {save_dir} (--resume "
            f"reads only those). {hint}")
    path = os.path.join(save_dir, name)
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{tag} names {name}, but {path} does not exist. {hint}")
    return path


def atomic_torch_save(data, path):
    """``torch.save`` to a temporary file in the same folder, then rename: a kill while
    saving leaves the previous checkpoint and a ``*.tmp`` file, never a truncated ``.pth``."""
    atomic_write(path, lambda f: torch.save(data, f))
