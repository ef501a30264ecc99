"""Test-only fault injection: make the process SIGKILL itself at a named point.

``IMAGESCORE_FAULT=<point>[@<n>]`` (read once, at import) kills the process with SIGKILL, the
signal nothing can catch, the ``n``-th time (default: the first) it reaches ``<point>``. The
kill tests (``tests/test_reliability.py``) use it to stop a real ``tools/train_net.py`` at a
chosen phase and check that ``--resume`` finishes the same run. Unset, every point is one
``is None`` test. Nothing imports Detectron2 or torch here.

==========================  ================================================================
point                       where the process dies
==========================  ================================================================
``iter@<i>``                before training iteration ``i`` (after a round at ``i`` ran)
``fit_mask@<n>``            mask fitting, after the n-th labeled batch (``engine/selection``)
``score@<n>``               scoring the pool, after the n-th batch
``pseudo_label@<n>``        pseudo-labeling the selection, after the n-th batch
``infer_pool@<n>``          the softmax selector's pass over the pool
``replace:<file name>``     an atomic write of ``<file name>`` (e.g. ``pseudo_dataset.json``,
                            ``selection.json``, ``model_0000003.pth``): the temporary file is
                            complete but not yet renamed to its name
==========================  ================================================================

For ``iter`` the number is the iteration; for the others it counts the hits in this
process.
"""
import os
import signal
import sys

ENV = "IMAGESCORE_FAULT"


def _parse(spec):
    if not spec:
        return None
    name, _, number = spec.strip().partition("@")
    if not name or (number and not number.isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected <point> or <point>@<n> (see "
                         "imagescore_det/faults.py)")
    return name, int(number) if number else None


_SPEC = _parse(os.environ.get(ENV))
_hits = {}


def configure(spec):
    """Set the fault (``None`` clears it); for in-process tests. Returns the previous one."""
    global _SPEC
    previous = _SPEC
    _SPEC = _parse(spec) if isinstance(spec, str) or spec is None else spec
    _hits.clear()
    return previous


def fault_point(name, index=None):
    """A place where ``IMAGESCORE_FAULT`` may kill the process (``index``: the iteration)."""
    if _SPEC is None:
        return
    name = name.replace(" ", "_").replace("-", "_")
    wanted, number = _SPEC
    if name != wanted:
        return
    if index is None:
        index = _hits[name] = _hits.get(name, 0) + 1
    if number is None or index == number:
        sys.stderr.write(f"{ENV}: SIGKILL at {name}@{index} (pid {os.getpid()})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
