"""The one ranking rule: highest score first, ties broken by pool order."""
import math

import numpy as np


def rank_order(scores):
    """Pool indices sorted best first: descending score, ties by ascending index."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.lexsort((np.arange(len(scores)), -scores))


def ranks_of(scores):
    """Per image its rank, 1 = best (the position :func:`rank_order` gives it)."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[rank_order(scores)] = np.arange(1, len(scores) + 1)
    return ranks


def num_to_select(pool_size, fraction):
    """``ceil(fraction * pool_size)``, at least 1 (what a round pseudo-labels)."""
    if pool_size == 0:
        raise ValueError("The unlabeled pool is empty: nothing to select from.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"TOP_FRACTION must be in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * pool_size - 1e-9))


def select_top(scores, fraction):
    """Indices of the ``ceil(fraction * n)`` highest scores, best first; ties by pool order."""
    return rank_order(scores)[:num_to_select(len(scores), fraction)]
