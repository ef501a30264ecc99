"""AUROC against brute-force pair counting, known answers and bad input."""
import itertools

import numpy as np
import pytest

from imagescore_det.evaluation.auroc import auroc, auroc_interval


def brute_force(scores, positives):
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(20))
def test_equals_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    scores = rng.integers(0, 6, n).astype(float)  # many ties
    positives = rng.random(n) < 0.4
    positives[0], positives[1] = True, False
    assert auroc(scores, positives) == pytest.approx(brute_force(scores, positives), abs=1e-12)


def test_known_answers():
    assert auroc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auroc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert auroc([5, 5, 5, 5], [True, False, True, False]) == 0.5
    # one positive (score 2) above one of the two negatives (1, 3): 1/2
    assert auroc([1, 2, 3], [False, True, False]) == 0.5
    assert auroc([1, 2], [True, True]) is None


def test_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        auroc([1, 2, 3], [True, False])
    with pytest.raises(ValueError, match="finite"):
        auroc([1, float("nan")], [True, False])


def test_interval_brackets_the_value_and_shrinks_with_more_data():
    rng = np.random.default_rng(0)
    def case(n):
        positives = rng.random(n) < 0.5
        scores = rng.normal(size=n) + positives  # a real but imperfect signal
        return auroc_interval(scores, positives, resamples=300)
    small, large = case(60), case(2000)
    for r in (small, large):
        assert r["ci"][0] <= r["auroc"] <= r["ci"][1]
    assert large["ci"][1] - large["ci"][0] < small["ci"][1] - small["ci"][0]
    assert 0.68 < large["auroc"] < 0.8  # Phi(1/sqrt(2)) = 0.76
