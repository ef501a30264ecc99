"""Training that goes non-finite stops with what a user needs to go on.

Detectron2's ``SimpleTrainer`` raises ``FloatingPointError("Loss became infinite or NaN at
iteration=...")`` on rank 0. :func:`non_finite_error` turns it into
:class:`NonFiniteLossError`, naming the iteration, every loss term, the last good checkpoint
in ``OUTPUT_DIR`` and the pseudo-label round that preceded the failure, if any.
"""
import os
import re

from .safe_load import LAST_CHECKPOINT


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says where and how to go on."""


def _loss_terms(message):
    """``{name: value text}`` from Detectron2's ``loss_dict = {...}`` in its message."""
    found = re.search(r"loss_dict\s*=\s*\{(.*)\}", message, re.S)
    if not found:
        return {}
    return {name: re.sub(r"^np\.\w+\((.*)\)$", r"\1", value.strip())  # np.float64(nan)
            for name, value in re.findall(r"'([^']+)':\s*([^,}]+)", found.group(1))}


def last_checkpoint(output_dir):
    """The checkpoint ``OUTPUT_DIR/last_checkpoint`` names, or None."""
    try:
        with open(os.path.join(output_dir, LAST_CHECKPOINT)) as f:
            name = f.read().strip()
    except OSError:
        return None
    path = os.path.join(output_dir, name)
    return path if name and os.path.isfile(path) else None


def non_finite_error(iteration, error, output_dir, rounds=()):
    """A :class:`NonFiniteLossError` for Detectron2's ``FloatingPointError`` ``error``.

    Args:
        rounds: the manifests (dicts) of the selection rounds done so far, oldest first.
    """
    terms = _loss_terms(str(error))
    bad = [name for name, value in terms.items()
           if value.strip().lower() in ("nan", "inf", "-inf")]
    lines = [f"Training stopped at iteration {iteration}: the loss became infinite or NaN."]
    if terms:
        lines.append("  loss terms: " + ", ".join(f"{k}={v.strip()}" for k, v in terms.items())
                     + (f" (non-finite: {', '.join(bad)})" if bad else ""))
    else:
        lines.append(f"  Detectron2 said: {str(error).strip()}")
    checkpoint = last_checkpoint(output_dir)
    lines.append(f"  last good checkpoint: {checkpoint}" if checkpoint else
                 f"  no checkpoint in {output_dir} yet: the run must start over")
    if rounds:
        last = rounds[-1]
        lines.append(
            f"  it follows pseudo-label round {last.get('round')} at iteration "
            f"{last.get('iteration')} ({last.get('dataset_name')}: "
            f"{last.get('num_pseudo_images')} images, {last.get('num_pseudo_boxes')} boxes, "
            f"folder {os.path.join(output_dir, 'image_score', 'round_%s' % last.get('round'))})")
    lines.append(
        "Lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS (or check the data"
        + (" and that round's pseudo-labels" if rounds else "") + "), then "
        + ("--resume from the last good checkpoint." if checkpoint else "start again."))
    return NonFiniteLossError("\n".join(lines))
