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


def rank_repeat_factors(order):
    """Per pool index, its repeat factor under linear rank weighting (``TEACHER.RANK_WEIGHTING``).

    ``order``: every pool index once, best first (:func:`rank_order`). The image of 0-based
    rank r among N weighs w = 1 - r / N (best 1, worst 1/N) and trains w / mean(w) =
    2 (N - r) / (N + 1) times as often as under uniform sampling (the factors' mean is 1),
    as Detectron2's ``RepeatFactorTrainingSampler`` takes them.
    """
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"The ranking to weight is not a permutation of the pool's {n} "
                         "indices (each index once, best first).")
    factors = np.empty(n, dtype=np.float64)
    factors[order] = 2.0 * (n - np.arange(n)) / (n + 1)
    return factors
