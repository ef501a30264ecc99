"""Bad images met during a selection round, handled per image and identically on every rank.

An image that passed the data check at trainer start can still fail in the round: a decode
error the header read cannot see, a file that changed since, a non-finite (NaN/Inf)
activation. :mod:`~imagescore_det.engine.selection` catches these per image
(:class:`SafeMapper` around the data loader's mapper, :class:`FiniteWatch` on the backbone's
output), all-gathers the failures in pool order with the results and hands them to
:func:`settle`: every rank then holds the same failures and takes the same decision.

* With a ``skipped`` dict (``IMAGE_SCORE.ON_BAD_IMAGE skip``, unlabeled pool) the failed
  images are recorded there and left out of the ranking; the round lists them in its
  ``skipped.csv`` and counts them in the manifest (``num_skipped``).
* Without one (``error``, the labeled set, or a caller that did not ask for skipping),
  :class:`BadImageError` names every failed file, the rank that met it, and the fix, on
  every rank at once (no rank is left waiting in a collective).

Never return None from a Detectron2 mapper to drop an image: its ``MapDataset`` then
silently substitutes another image of the dataset.
"""
import torch

from detectron2.utils import comm

BAD_IMAGE = "bad_image"  # key of a mapped item whose image could not be read
NON_FINITE = "non-finite activation (NaN or Inf) in the backbone output"
MAX_LISTED = 10


class BadImageError(RuntimeError):
    """An image that could not be used in a selection round; the message names the files,
    the process (rank) that met them and the fix."""


class SafeMapper:
    """A dataset mapper that never raises: an image that cannot be read, decoded or mapped
    becomes ``{"pool_index": i, BAD_IMAGE: "ExceptionType: message"}``."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except Exception as e:  # noqa: BLE001 - every per-image failure is recorded
            return {"pool_index": dataset_dict["pool_index"],
                    BAD_IMAGE: f"{type(e).__name__}: {e}".strip()}


def split_batch(batch, failures):
    """The readable items of a loader batch; the others go to ``failures`` as
    (pool index, reason)."""
    good = []
    for item in batch:
        if BAD_IMAGE in item:
            failures.append((item["pool_index"], item[BAD_IMAGE]))
        else:
            good.append(item)
    return good


class FiniteWatch:
    """Forward hooks on ``module`` that record, for every call, which images of the batch
    gave only finite activations (``flags``: one list of bools per call), checking
    ``module``'s output and those of ``layers`` (modules inside it).

    A layer output with a non-finite value is replaced, for that image only, by zeros: hooks
    registered later on the same layer (the ``ImageScorer``'s, which refuse non-finite
    values for the whole batch) and the layers downstream see finite values, so the pass goes
    on and the flagged image is dropped afterwards. Register the watch before those hooks.
    ``module`` None watches nothing.
    """

    def __init__(self, module, layers=()):
        self.flags = []
        self._bad = None
        self._handles = []
        if module is None:
            return
        self._handles.append(module.register_forward_pre_hook(self._start))
        self._handles += [layer.register_forward_hook(self._layer) for layer in layers]
        self._handles.append(module.register_forward_hook(self._finish))

    def _start(self, module, inputs):
        self._bad = None

    def _check(self, output):
        """Per image True where ``output`` holds a non-finite value (None: no tensors)."""
        tensors = [t for t in _tensors(output) if t.dim() > 0 and t.is_floating_point()]
        if not tensors:
            return None
        n = tensors[0].shape[0]
        bad = torch.zeros(n, dtype=torch.bool, device=tensors[0].device)
        for t in tensors:
            t = t.detach()
            # one cheap reduction; per-image only when it is not finite (or overflows)
            if t.shape[0] == n and not bool(torch.isfinite(t.sum(dtype=torch.float32))):
                bad |= ~torch.isfinite(t.reshape(n, -1)).all(dim=1)
        self._bad = bad if self._bad is None else self._bad | bad
        return bad

    def _layer(self, module, inputs, output):
        bad = self._check(output)
        if bad is None or not isinstance(output, torch.Tensor) or not bool(bad.any()):
            return None
        keep = (~bad).view(-1, *([1] * (output.dim() - 1)))
        return torch.where(keep, output, torch.zeros((), dtype=output.dtype,
                                                     device=output.device))

    def _finish(self, module, inputs, output):
        self._check(output)
        if self._bad is not None:
            self.flags.append((~self._bad).cpu().tolist())
        self._bad = None

    def non_finite(self, batches):
        """(pool index, NON_FINITE) of the images of ``batches`` (pool indices per forward
        call, in call order) whose activations were not all finite."""
        out = []
        for indices, flags in zip(batches, self.flags):
            out += [(i, NON_FINITE) for i, ok in zip(indices, flags) if not ok]
        return out

    def close(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for t in output.values() if isinstance(t, torch.Tensor)]
    if isinstance(output, (list, tuple)):
        return [t for t in output if isinstance(t, torch.Tensor)]
    return []


def with_rank(failures):
    """Tag each (index, reason) with the process that met it (when there are several)."""
    if comm.get_world_size() == 1:
        return list(failures)
    rank = comm.get_rank()
    return [(i, f"{reason} (rank {rank})") for i, reason in failures]


def settle(failures, dicts, skipped, what):
    """Apply the policy to ``failures`` ({index in ``dicts``: reason}, the same on every rank).

    ``skipped`` None raises :class:`BadImageError`; a dict receives the failures."""
    if not failures:
        return
    if skipped is not None:
        skipped.update(failures)
        return
    items = sorted(failures.items())
    listed = "\n".join(f"  {dicts[i].get('file_name', i)}: {reason}"
                       for i, reason in items[:MAX_LISTED])
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    pool = "pool" in what
    fix = ("Set IMAGE_SCORE.ON_BAD_IMAGE skip to leave such pool images out (each round lists "
           "them in skipped.csv), or " if pool else
           "Labeled images are never skipped: ") + (
        "repair or re-copy the files, or delete their ids from the split file; "
        "`python tools/check_dataset.py --deep NAME` decodes every image and lists the ones "
        "that fail. A non-finite activation on every image means the model itself diverged.")
    raise BadImageError(f"{len(items)} image(s) of the {what} could not be used:\n{listed}{more}\n"
                        f"{fix}")


def skip_record(d, reason, phase):
    """A row of the round's skipped.csv."""
    return {"image_id": d.get("image_id", ""), "file_name": d.get("file_name", ""),
            "phase": phase, "reason": reason}


def drop_skipped(pool, ranking, skipped, records, phase):
    """``pool`` and ``ranking`` (a selectors.Ranking over ``pool``) without the ``skipped``
    indices, which are appended to ``records``. Raises :class:`BadImageError` when nothing
    is left."""
    if not skipped:
        return pool, ranking
    records.extend(skip_record(pool[i], skipped[i], phase) for i in sorted(skipped))
    keep = [i for i in range(len(pool)) if i not in skipped]
    if not keep:
        raise BadImageError(
            f"Every one of the {len(pool)} images of the unlabeled pool was skipped, e.g. "
            f"{records[0]['file_name']}: {records[0]['reason']}. Check the pool with "
            "`python tools/check_dataset.py --deep NAME`; a non-finite activation on every "
            "image means the model itself diverged.")
    if ranking is not None:
        ranking.scores = ranking.scores[keep]
        if ranking.predictions is not None:
            ranking.predictions = [ranking.predictions[i] for i in keep]
        if ranking.truth is not None:
            ranking.truth = [ranking.truth[i] for i in keep]
    return [pool[i] for i in keep], ranking
