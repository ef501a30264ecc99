"""AUROC of a score for a yes/no outcome, with a bootstrap interval (plain NumPy).

Used to ask whether a selection score predicts pseudo-label correctness: the AUROC is the
probability that a randomly drawn positive (e.g. an image whose pseudo-boxes are all
correct) scores higher than a randomly drawn negative, ties counting half. 0.5 = no better
than chance; 1 = the score separates them perfectly; below 0.5 = the score points the wrong
way. It equals the Mann-Whitney U statistic divided by ``n_pos * n_neg``.
"""
import numpy as np


def _average_ranks(values):
    """1-based ranks of ``values``, tied values sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def auroc(scores, positives):
    """AUROC of ``scores`` for the boolean outcome ``positives``; None if either class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 1:
        raise ValueError(f"auroc: scores {scores.shape} and outcomes {positives.shape} must be "
                         "1-D and of equal length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("auroc: scores must be finite")
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _average_ranks(scores)[positives].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def stratified_auroc(scores, positives, strata):
    """The probability that a positive scores above a negative *of the same stratum* (ties
    half): the per-stratum AUROCs weighted by their pair counts. None without such a pair.
    E.g. strata = the image's box count, so that the count itself cannot drive it."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    strata = np.asarray(strata)
    total, pairs = 0.0, 0
    for group in np.unique(strata):
        inside = strata == group
        value = auroc(scores[inside], positives[inside])
        if value is not None:
            n = int(positives[inside].sum()) * int((~positives[inside]).sum())
            total, pairs = total + value * n, pairs + n
    return total / pairs if pairs else None


def auroc_interval(scores, positives, resamples=1000, seed=0, level=0.95, groups=None,
                   statistic=None):
    """``{"auroc", "ci", "positives", "negatives"}``: the AUROC and a percentile bootstrap
    interval (resamples lacking a class are drawn again, up to 10x).

    ``groups``: resample whole groups (e.g. the boxes of one image together: a cluster
    bootstrap) instead of single items. ``statistic``: ``f(index) -> value or None`` to
    bootstrap instead of the AUROC of the items at ``index`` (e.g. a stratified AUROC)."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if statistic is None:
        def statistic(index):
            return auroc(scores[index], positives[index])
    value = statistic(np.arange(len(scores)))
    out = {"auroc": value, "ci": None, "positives": int(positives.sum()),
           "negatives": int((~positives).sum())}
    if value is None:
        return out
    if groups is None:
        members = None
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(10 * resamples):
        if members is None:
            index = rng.integers(0, len(scores), len(scores))
        else:
            index = np.concatenate([members[g] for g in rng.integers(0, len(members),
                                                                    len(members))])
        v = statistic(index)
        if v is not None:
            draws.append(v)
        if len(draws) == resamples:
            break
    tail = (1.0 - level) / 2.0
    out["ci"] = [float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))]
    return out
