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


def auroc_interval(scores, positives, resamples=1000, seed=0, level=0.95):
    """``{"auroc", "ci", "positives", "negatives"}``: the AUROC and a percentile bootstrap
    interval over the items (resamples lacking a class are drawn again, up to 10x)."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    value = auroc(scores, positives)
    out = {"auroc": value, "ci": None, "positives": int(positives.sum()),
           "negatives": int((~positives).sum())}
    if value is None:
        return out
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(10 * resamples):
        index = rng.integers(0, len(scores), len(scores))
        v = auroc(scores[index], positives[index])
        if v is not None:
            draws.append(v)
        if len(draws) == resamples:
            break
    tail = (1.0 - level) / 2.0
    out["ci"] = [float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))]
    return out
