"""Hypothesis property tests of ImageScorer on random shapes (vs the NumPy brute force)."""
import math
import warnings
from collections import OrderedDict

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from imagescore_det.scoring import ImageBatch, ImageScorer

from test_scoring import brute_force

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def build(spatial, c, c2, seed):
    torch.manual_seed(seed)
    if spatial:
        mid = nn.Conv2d(c, c2, 3, stride=2, padding=1)
    else:
        mid = nn.Linear(c, c2)
    return nn.Sequential(OrderedDict(a=nn.ReLU(), mid=mid, b=nn.ReLU())).double()


@st.composite
def problems(draw):
    spatial = draw(st.booleans())
    c, c2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    padded = spatial and draw(st.booleans())
    grid = (draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
            if padded or (spatial and draw(st.booleans())) else None)
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)

    def batches(n_img, bs):
        out = []
        for i in range(0, n_img, bs):
            n = min(bs, n_img - i)
            shape = (n, c, H, W) if spatial else (n, c)
            x = torch.randn(shape, generator=g, dtype=torch.float64)
            if padded:
                vs = [(draw(st.integers(1, H)), draw(st.integers(1, W))) for _ in range(n)]
                out.append(ImageBatch(x, valid_sizes=vs))
            else:
                out.append(x)
        return out

    fit = batches(draw(st.integers(1, 6)), draw(st.integers(1, 4)))
    score = batches(draw(st.integers(1, 5)), draw(st.integers(1, 4)))
    return dict(model=build(spatial, c, c2, seed), fit=fit, score=score, grid=grid,
                similarity=draw(st.sampled_from(["iou", "recall", "precision"])),
                ratio=draw(st.sampled_from([0.1, 0.5, 0.9, 1.0])))


@SETTINGS
@given(problems())
def test_random_shapes_match_bruteforce(p):
    layers = ["a", "mid", "b"]  # 'mid' can be all-negative: empty mask, skipped
    scorer = ImageScorer(p["model"], layers=layers, similarity=p["similarity"],
                         threshold_ratio=p["ratio"], grid=p["grid"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scorer.fit(p["fit"])
        scores = scorer.score(p["score"])
    ref, _, _, _ = brute_force(p["model"], layers, p["fit"], p["score"], p["similarity"],
                               p["ratio"], p["grid"])
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-12, atol=1e-12)
    # bounds: every layer term is in [log(1e-6), 0]
    assert (scores <= 0).all()
    assert (scores >= len(layers) * math.log(1e-6) - 1e-9).all()


@SETTINGS
@given(problems())
def test_single_fitted_image_scores_zero(p):
    first = p["fit"][0]
    if isinstance(first, ImageBatch):
        one = [ImageBatch(first.inputs[:1], valid_sizes=first.valid_sizes[:1])]
    else:
        one = [first[:1]]
    scorer = ImageScorer(p["model"], layers=["a", "b"], similarity=p["similarity"],
                         threshold_ratio=p["ratio"], grid=p["grid"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scorer.fit(one)
        assert scorer.score(one).tolist() == [0.0]


@SETTINGS
@given(problems(), st.integers(1, 5))
def test_score_independent_of_batching(p, bs):
    scorer = ImageScorer(p["model"], layers=["a", "mid", "b"], grid=p["grid"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scorer.fit(p["fit"])
        whole = scorer.score(p["score"])
        if isinstance(p["score"][0], ImageBatch):
            x = torch.cat([b.inputs for b in p["score"]])
            vs = [v for b in p["score"] for v in b.valid_sizes]
            rebatched = [ImageBatch(x[i:i + bs], valid_sizes=vs[i:i + bs])
                         for i in range(0, len(x), bs)]
        else:
            x = torch.cat(p["score"])
            rebatched = list(x.split(bs))
        torch.testing.assert_close(scorer.score(rebatched), whole, rtol=1e-12, atol=1e-12)
