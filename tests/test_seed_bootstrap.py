"""The two-level bootstrap over seeds and test images (evaluation.bootstrap's
``seed_image_bootstrap``, ``seed_gain``, ``seed_share_of_gain``): known answers on handmade
detections files (plain NumPy, no Detectron2)."""
import itertools

import numpy as np
import pytest

from imagescore_det.evaluation.bootstrap import (
    PreparedRun,
    compare,
    full_set_mean_ap,
    mean_over_drawn_seeds,
    resample_weights,
    seed_gain,
    seed_image_bootstrap,
    seed_image_weights,
    seed_share_of_gain,
)
from imagescore_det.evaluation import detections

CLASSES = ["a"]


def _evaluation(truth, found, name="run"):
    """An Evaluation of one class "a": ``truth`` {image: [box]}, ``found``
    [(image, score, box)]."""
    ground_truth = {i: [["a", 0, *box] for box in boxes] for i, boxes in truth.items()}
    ids = list(truth)
    return detections.Evaluation(
        path=name, dataset="hand", classes=CLASSES, use_07_metric=True, image_ids=ids,
        ground_truth=ground_truth,
        detections={"a": {"image_ids": [d[0] for d in found],
                          "scores": [d[1] for d in found],
                          "boxes": [list(map(float, d[2])) for d in found]}},
        fingerprint=detections.test_set_fingerprint(ids, ground_truth, CLASSES, True))


BOX, OTHER = [10, 10, 50, 50], [60, 60, 90, 90]
MISS = [100, 100, 120, 120]


def _random_run(truth, rng, hit_rate):
    """Per true box a detection that hits it with probability ``hit_rate`` (else lands
    elsewhere), plus a stray box per image; scores drawn at random."""
    dets = []
    for image, boxes in truth.items():
        for box in boxes:
            dets.append((image, round(float(rng.random()), 3),
                         box if rng.random() < hit_rate else MISS))
        dets.append((image, round(float(rng.random()), 3), MISS))
    return dets


def _test_set(n):
    return {f"img{i}": [BOX] + ([OTHER] if i % 3 == 0 else []) for i in range(n)}


def _pair(truth, seed, hit_a, hit_b):
    rng = np.random.default_rng(seed)
    return {"a": _evaluation(truth, _random_run(truth, rng, hit_a), f"a{seed}"),
            "b": _evaluation(truth, _random_run(truth, rng, hit_b), f"b{seed}")}


def test_with_one_seed_it_is_the_paired_bootstrap():
    """One seed: the same image resamples as compare's (same rng), the same interval and
    p, and the seed level draws nothing else."""
    truth = _test_set(12)
    runs = _pair(truth, 0, 0.5, 0.8)
    images, seeds = seed_image_weights(1, 12, resamples=200, seed=7)
    assert np.array_equal(images, resample_weights(12, 200, 7))
    assert np.all(seeds == 1)
    result = seed_image_bootstrap([runs], resamples=200, seed=7)
    gain = seed_gain(result, "a", "b")
    paired = compare(runs["a"], runs["b"], resamples=200, seed=7)["AP50"]
    assert gain["ci"] == paired["ci"] and gain["p_value"] == paired["p_value"]
    assert gain["difference"] == paired["difference"] and gain["per_seed"] == [
        paired["difference"]]
    assert paired["ci"][0] < paired["ci"][1]  # not a degenerate case


def test_identical_runs_give_zero_and_an_interval_of_zero():
    truth = _test_set(10)
    runs = [_pair(truth, s, 0.4 + 0.2 * s, 0.9) for s in range(3)]  # seeds differ
    same = [{"a": r["a"], "b": r["a"]} for r in runs]
    result = seed_image_bootstrap(same, resamples=100, seed=1)
    gain = seed_gain(result, "a", "b")
    assert gain["difference"] == 0 and gain["ci"] == [0.0, 0.0] and gain["p_value"] == 0.5
    assert gain["per_seed"] == [0.0, 0.0, 0.0]
    # the seeds' own AP does vary, so the identical arms' interval is not trivially zero
    assert np.ptp(result["boot"]["a"]["AP50"]) > 0


def _copies(evaluation, weights):
    """A test set holding ``weights[i]`` copies of image i (the resample written out)."""
    truth, dets = {}, []
    d = evaluation.detections["a"]
    for i, image in enumerate(evaluation.image_ids):
        for k in range(int(weights[i])):
            copy = f"{image}_c{k}"
            truth[copy] = [o[2:] for o in evaluation.ground_truth[image]]
            dets += [(copy, s, b) for owner, s, b in zip(d["image_ids"], d["scores"], d["boxes"])
                     if owner == image]
    return _evaluation(truth, dets)


def test_brute_force_two_seeds_two_images():
    """Every two-level resample of 2 seeds x 2 images enumerated (4 seed draws x 4 image
    draws, one image draw for both seeds, equally likely), each resample's AP computed on
    the test set written with the copies: the bootstrap's values, their frequencies and its
    95% interval match that exact distribution."""
    truth = {"x": [BOX], "y": [BOX, OTHER]}
    runs = [
        {"a": _evaluation(truth, [("x", 0.9, BOX), ("y", 0.8, MISS), ("y", 0.3, OTHER)]),
         "b": _evaluation(truth, [("x", 0.9, BOX), ("y", 0.7, OTHER), ("y", 0.6, BOX)])},
        {"a": _evaluation(truth, [("x", 0.2, BOX), ("y", 0.8, BOX), ("x", 0.5, MISS)]),
         "b": _evaluation(truth, [("x", 0.2, MISS), ("y", 0.8, BOX), ("y", 0.9, OTHER)])},
    ]
    exact = []
    for seed_draw in itertools.product(range(2), repeat=2):
        for image_draw in itertools.product(range(2), repeat=2):
            weights = np.bincount(image_draw, minlength=2)
            diffs = [full_set_mean_ap(PreparedRun(_copies(runs[s][arm], weights))
                                      .full_set_ap())["AP50"] for s in seed_draw
                     for arm in ("a", "b")]
            exact.append(np.mean(diffs[1::2]) - np.mean(diffs[0::2]))
    exact = np.round(exact, 9)
    assert len(set(exact)) >= 4  # a distribution with some spread
    result = seed_image_bootstrap(runs, resamples=4000, seed=3)
    boot = np.round(result["boot"]["b"]["AP50"] - result["boot"]["a"]["AP50"], 9)
    values, counts = np.unique(exact, return_counts=True)
    assert set(np.unique(boot)) <= set(values)
    for value, count in zip(values, counts):
        assert np.mean(boot == value) == pytest.approx(count / 16, abs=0.03), value
    # the exact 2.5% and 97.5% quantiles (no jump of the exact CDF within 1/16 of them)
    lo, hi = np.sort(exact)[0], np.sort(exact)[-1]
    assert seed_gain(result, "a", "b")["ci"] == pytest.approx([lo, hi])
    # the full-set numbers are the seeds' own
    for s in range(2):
        for arm in ("a", "b"):
            assert result["full"][arm]["AP50"][s] == full_set_mean_ap(
                PreparedRun(runs[s][arm]).full_set_ap())["AP50"]


def test_the_interval_widens_when_seeds_disagree():
    """Two seeds with the same runs: exactly the one-seed paired interval (the seed level
    adds nothing). Seeds whose gains disagree: a wider interval around their mean."""
    truth = _test_set(40)
    pair = _pair(truth, 0, 0.5, 0.9)
    paired = compare(pair["a"], pair["b"], resamples=300, seed=2)["AP50"]
    agree = seed_gain(seed_image_bootstrap([pair, pair], 300, 2), "a", "b")
    assert agree["ci"] == paired["ci"]
    reverse = {"a": pair["b"], "b": pair["a"]}  # the second seed loses what the first gains
    disagree = seed_gain(seed_image_bootstrap([pair, reverse], 300, 2), "a", "b")
    assert disagree["difference"] == 0 and disagree["per_seed"] == [
        paired["difference"], -paired["difference"]]
    assert disagree["ci"][0] < agree["ci"][0] - 5 and disagree["ci"][1] > 0
    assert disagree["ci"][1] - disagree["ci"][0] > 1.5 * (agree["ci"][1] - agree["ci"][0])


def test_mean_over_drawn_seeds_known_values():
    per_seed = np.array([[1.0, 2.0, np.nan], [10.0, 20.0, 30.0]])
    seed_weights = np.array([[2, 0], [1, 1], [0, 2]])
    assert np.array_equal(mean_over_drawn_seeds(per_seed, seed_weights), [1.0, 11.0, 30.0])
    seed_weights = np.array([[2, 0], [1, 1], [1, 1]])
    out = mean_over_drawn_seeds(per_seed, seed_weights)
    assert out[:2].tolist() == [1.0, 11.0] and np.isnan(out[2])  # a drawn NaN: no value


def _result(boot, full):
    """A seed_image_bootstrap-shaped result from synthetic numbers (AP50 only)."""
    return {"boot": {k: {"AP50": np.asarray(v, float)} for k, v in boot.items()},
            "full": {k: {"AP50": np.asarray(v, float)} for k, v in full.items()}}


def test_share_of_the_oracle_gain_known_answers():
    # supervised 50, oracle 60 (+10), selector 54 (+4) on two seeds: share 0.4
    full = {"none": [49, 51], "oracle": [59, 61], "sel": [53, 55]}
    boot = {"none": [50, 50, 50, 50], "oracle": [55, 60, 65, 70], "sel": [51, 52, 55, 57]}
    share = seed_share_of_gain(_result(boot, full), "none", "sel", "oracle")
    assert share["share"] == pytest.approx(0.4) and share["undefined"] is None
    assert share["reference_gain"] == 10
    ratios = [1 / 5, 2 / 10, 5 / 15, 7 / 20]
    assert share["ci"] == pytest.approx(list(np.percentile(ratios, [2.5, 97.5])))
    # against the wrong baseline (the oracle itself, or the selector) it would differ
    assert share["share"] != pytest.approx((54 - 60) / (54 - 60))


@pytest.mark.parametrize("oracle_boot", [[48, 49, 52, 53], [45, 46, 47, 48]])
def test_share_is_undefined_when_the_oracle_gain_is_not_above_zero(oracle_boot):
    """An oracle gain whose interval reaches 0 (or is below it): no share, a reason, not a
    huge ratio of a tiny gain."""
    full = {"none": [50, 50], "oracle": [50.1, 50.1], "sel": [55, 55]}
    boot = {"none": [50] * 4, "oracle": oracle_boot, "sel": [55] * 4}
    share = seed_share_of_gain(_result(boot, full), "none", "sel", "oracle")
    assert share["share"] is None and share["ci"] is None
    assert "not distinguishable from 0" in share["undefined"] and "oracle" in share["undefined"]
    assert share["reference_gain"] == pytest.approx(0.1)


def test_runs_on_another_test_set_or_other_arms_are_refused():
    truth = _test_set(6)
    pair = _pair(truth, 0, 0.5, 0.8)
    other = _pair(_test_set(7), 1, 0.5, 0.8)
    with pytest.raises(ValueError, match="different test sets"):
        seed_image_bootstrap([pair, other], resamples=5)
    with pytest.raises(ValueError, match="same arms"):
        seed_image_bootstrap([pair, {"a": pair["a"]}], resamples=5)
