"""ImageScorer against a brute-force NumPy reference, hand-computed cases and bad input."""
import math
import os
import re
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from imagescore_det.scoring import FORMAT_VERSION, ImageBatch, ImageScorer, resolve_layers

FLOOR = math.log(1e-6)


# ------------------------------------------------------------------ brute-force reference
def np_adaptive_avg_pool(a, gh, gw):
    """(C, H, W) -> (C, gh, gw), PyTorch's adaptive-pool windows, float64."""
    C, H, W = a.shape
    out = np.empty((C, gh, gw))
    for i in range(gh):
        h0, h1 = (i * H) // gh, math.ceil((i + 1) * H / gh)
        for j in range(gw):
            w0, w1 = (j * W) // gw, math.ceil((j + 1) * W / gw)
            out[:, i, j] = a[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def raw_activations(model, layer_names, batches):
    """Per image: {layer: float64 array of the per-image (cropped, un-pooled) map}."""
    modules = dict(model.named_modules())
    out = []
    for batch in batches:
        inputs = batch.inputs if isinstance(batch, ImageBatch) else batch
        store = {}
        hs = [modules[n].register_forward_hook(
            lambda m, i, o, n=n: store.__setitem__(n, o.detach().double().numpy().copy()))
            for n in layer_names]
        was = model.training
        model.eval()
        with torch.no_grad():
            model(inputs)
        model.train(was)
        for h in hs:
            h.remove()
        n_img = store[layer_names[0]].shape[0]
        for i in range(n_img):
            per = {}
            for n in layer_names:
                a = store[n][i]
                if a.ndim == 3 and isinstance(batch, ImageBatch) and batch.valid_sizes is not None:
                    H, W = batch.input_size or tuple(inputs.shape[-2:])
                    h, w = batch.valid_sizes[i]
                    hf, wf = a.shape[1:]
                    ch = min(hf, max(1, math.ceil(h * hf / H)))
                    cw = min(wf, max(1, math.ceil(w * wf / W)))
                    a = a[:, :ch, :cw]
                per[n] = a
            out.append(per)
    return out


def labels_of(batches):
    return [int(l) for b in batches for l in b.labels]


def brute_force(model, layer_names, fit_batches, score_batches, similarity="iou", ratio=0.5,
                grid=None, num_classes=None):
    def feats(batches):
        acts = raw_activations(model, layer_names, batches)
        res = []
        for per in acts:
            f = {}
            for n, a in per.items():
                if a.ndim == 3 and grid is not None:
                    a = np_adaptive_avg_pool(a, *grid)
                f[n] = a.reshape(-1)
            res.append(f)
        return res

    fit_f, score_f = feats(fit_batches), feats(score_batches)
    K = num_classes or 1
    fit_lab = labels_of(fit_batches) if num_classes else [0] * len(fit_f)
    score_lab = labels_of(score_batches) if num_classes else [0] * len(score_f)
    thr, masks = {}, {}
    for n in layer_names:
        for k in range(K):
            xs = [f[n] for f, lab in zip(fit_f, fit_lab) if lab == k]
            if not xs:
                continue
            mean = np.sum(xs, axis=0) / len(xs)
            t = ratio * mean.max()
            thr[n, k] = t
            masks[n, k] = mean >= t
    scores, ratios = [], []
    for f, k in zip(score_f, score_lab):
        s, rs = 0.0, []
        for n in layer_names:
            B = masks[n, k]
            if B.sum() == 0:
                rs.append(float("nan"))
                continue
            A = f[n] >= thr[n, k]
            inter = np.logical_and(A, B).sum()
            union = np.logical_or(A, B).sum()
            r = {"iou": inter / union if union else 0.0, "recall": inter / B.sum(),
                 "precision": inter / A.sum() if A.sum() else 0.0}[similarity]
            rs.append(r)
            s += math.log(max(r, 1e-6))
        scores.append(s)
        ratios.append(rs)
    return np.array(scores), np.array(ratios), thr, masks


# ------------------------------------------------------------------ models / data
class SmallNet(nn.Module):
    """conv -> relu -> conv(stride 2) -> relu -> pool -> linear -> relu."""

    def __init__(self, c=3):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(24, 5)
        self.relu3 = nn.ReLU()

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.relu3(self.fc(self.pool(x).flatten(1)))


def make_net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return SmallNet().to(dtype)


def make_batches(n_batches=3, bs=4, size=(12, 10), seed=1, dtype=torch.float64, padded=False,
                 num_classes=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        x = torch.randn(bs, 3, *size, generator=g, dtype=dtype)
        if padded or num_classes:
            vs = None
            if padded:
                vs = [(int(torch.randint(1, size[0] + 1, (1,), generator=g)),
                       int(torch.randint(1, size[1] + 1, (1,), generator=g))) for _ in range(bs)]
                for i, (h, w) in enumerate(vs):  # zero padding, like an image list
                    x[i, :, h:, :] = 0
                    x[i, :, :, w:] = 0
            labels = ([int(v) for v in torch.randint(0, num_classes, (bs,), generator=g)]
                      if num_classes else None)
            out.append(ImageBatch(x, valid_sizes=vs, labels=labels))
        else:
            out.append(x)
    return out


LAYERS = ["relu1", "relu2", "relu3"]


# ------------------------------------------------------------------ vs brute force
@pytest.mark.parametrize("similarity", ["iou", "recall", "precision"])
@pytest.mark.parametrize("ratio", [0.5, 0.8])
@pytest.mark.parametrize("grid,padded", [(None, False), ((3, 3), False), ((3, 3), True), ((5, 4), True)])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_matches_bruteforce(similarity, ratio, grid, padded, num_classes):
    model = make_net()
    fit_b = make_batches(3, 4, seed=1, padded=padded, num_classes=num_classes)
    score_b = make_batches(2, 5, seed=2, padded=padded, num_classes=num_classes)
    scorer = ImageScorer(model, layers=LAYERS, similarity=similarity, threshold_ratio=ratio,
                         grid=grid, num_classes=num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # possibly-absent class
        scorer.fit(fit_b)
    ref_scores, ref_ratios, thr, masks = brute_force(
        model, LAYERS, fit_b, score_b, similarity, ratio, grid, num_classes)
    present = set(labels_of(fit_b)) if num_classes else {0}
    if num_classes and not set(labels_of(score_b)) <= present:
        with pytest.raises(ValueError, match="no fitted image had that class"):
            scorer.score(score_b)
        return
    scores, det = scorer.score(score_b, details=True)
    assert scores.dtype == torch.float64 and scores.shape == (10,)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(det["ratio"].numpy(), ref_ratios, rtol=1e-12, atol=1e-12)
    for l, n in enumerate(LAYERS):
        for k in present:
            np.testing.assert_array_equal(scorer.masks[l][k].reshape(-1).numpy(), masks[n, k])
            assert float(scorer.thresholds[k, l]) == pytest.approx(thr[n, k], rel=1e-12)


def test_float32_model_matches_float64_reference():
    """float32 activations are compared with the float64 threshold exactly (rounded up)."""
    model = make_net(dtype=torch.float32)
    fit_b = make_batches(3, 4, seed=1, dtype=torch.float32)
    score_b = make_batches(2, 4, seed=2, dtype=torch.float32)
    scorer = ImageScorer(model, layers=LAYERS, grid=(3, 3)).fit(fit_b)
    ref, _, _, _ = brute_force(model, LAYERS, fit_b, score_b, grid=(3, 3))
    # pooling runs in float32 here vs float64 in the reference: allow tiny differences only
    np.testing.assert_allclose(scorer.score(score_b).numpy(), ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ hand-computed cases
def two_relu_identity():
    return nn.Sequential(OrderedDict(a=nn.ReLU(), b=nn.ReLU()))


def test_identical_image_scores_zero():
    model = make_net()
    x = make_batches(1, 1, seed=5)
    scorer = ImageScorer(model, layers=LAYERS).fit(x)
    assert scorer.score(x).tolist() == [0.0]


def test_disjoint_masks_hit_the_floor():
    model = two_relu_identity()
    fit = [torch.tensor([[1.0, 0.0, 0.0, 0.0]])]
    other = [torch.tensor([[0.0, 1.0, 0.0, 0.0]])]
    scorer = ImageScorer(model).fit(fit)
    assert scorer.layer_names == ["a", "b"]
    s = scorer.score(other)
    assert s.tolist() == pytest.approx([2 * FLOOR])
    assert scorer.score(fit).tolist() == [0.0]


@pytest.mark.parametrize("similarity,expected", [("iou", 1 / 3), ("recall", 1 / 2), ("precision", 1 / 2)])
def test_hand_computed_overlap(similarity, expected):
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    fit = [torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])]  # mean [1, .5, 0, 0]
    scorer = ImageScorer(model, similarity=similarity).fit(fit)       # t = .5, M = [1,1,0,0]
    assert scorer.masks[0][0].tolist() == [True, True, False, False]
    assert float(scorer.thresholds[0, 0]) == 0.5
    s, d = scorer.score([torch.tensor([[0.0, 0.7, 0.5, 0.49]])], details=True)  # M_I = [0,1,1,0]
    assert s.tolist() == pytest.approx([math.log(expected)])
    assert d["image_mask_size"].tolist() == [[2.0]]
    assert d["intersection"].tolist() == [[1.0]]
    assert d["dataset_mask_size"].tolist() == [[2.0]]
    assert scorer.mask_sizes().tolist() == [2]


@pytest.mark.parametrize("similarity,expected", [("iou", 1 / 4), ("recall", 1 / 2), ("precision", 1 / 3)])
def test_the_three_overlaps_differ_when_the_image_mask_is_larger(similarity, expected):
    """M = [1,1,0,0] (|B| = 2), M_I = [0,1,1,1] (|A| = 3), |A & B| = 1, |A | B| = 4."""
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    fit = [torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])]
    scorer = ImageScorer(model, similarity=similarity).fit(fit)
    s = scorer.score([torch.tensor([[0.0, 0.7, 0.5, 0.6]])])
    assert s.tolist() == pytest.approx([math.log(expected)])


def test_precision_of_an_empty_image_mask_is_the_floor():
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    scorer = ImageScorer(model, similarity="precision").fit([torch.tensor([[1.0, 0.0]])])
    assert scorer.score([torch.tensor([[0.1, 0.0]])]).tolist() == pytest.approx([FLOOR])


def test_spatial_hand_computed_with_padding_crop():
    """Padding never counts: a 4x4 map, image valid 2x2, grid 1x1 pools only the valid crop."""
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2] = 1.0
    x[0, 0, 2:, 2:] = 100.0  # "padding" garbage, cropped away
    b = ImageBatch(x, valid_sizes=[(2, 2)])
    scorer = ImageScorer(model, grid=(1, 1)).fit([b])
    assert scorer.layer_shapes == [(1, 1, 1)]
    assert float(scorer.thresholds[0, 0]) == 0.5  # mean of the crop is 1.0
    y = torch.full((1, 1, 8, 8), 0.4)
    y[0, 0, :3, :3] = 0.6  # valid 3x3 -> pooled 0.6 >= 0.5; the whole map would pool lower
    assert scorer.score([ImageBatch(y, valid_sizes=[(3, 3)])]).tolist() == [0.0]
    assert scorer.score([y]).tolist() == [pytest.approx(FLOOR)]


def powers_of_two_map(rows, cols, copies=1):
    """(copies, 1, rows, cols) map, entry (r, c) = 2**(cols*r + c): every crop has its own mean."""
    one = (2.0 ** torch.arange(rows * cols, dtype=torch.float64)).reshape(1, 1, rows, cols)
    return one.repeat(copies, 1, 1, 1)


@pytest.mark.parametrize("map_size,input_size,valid_sizes,crop_mean", [
    # 3x3 map of an 8x8 input, valid 5x5: ceil(5*3/8) = 2 rows and cols (floor: 1, no crop: 3);
    # crop [[1, 2], [8, 16]]
    ((3, 3), (8, 8), [(5, 5)], 27 / 4),
    # 3x4 map of a 6x8 input, valid 5x3: ceil(5*3/6) = 3 rows (floor 2), ceil(3*4/8) = 2 cols
    # (floor 1); crop: columns 0-1 of [[1 .. 8], [16 .. 128], [256 .. 2048]]
    ((3, 4), (6, 8), [(5, 3)], (1 + 2 + 16 + 32 + 256 + 512) / 6),
    # per image in one batch: (5, 3) as above, and (4, 7): ceil(4*3/6) = 2 rows, ceil(7*4/8) = 4
    # cols (floor 3), crop rows 0-1 = 255 / 8; the threshold uses the mean over both images
    ((3, 4), (6, 8), [(5, 3), (4, 7)], ((1 + 2 + 16 + 32 + 256 + 512) / 6 + 255 / 8) / 2),
    # the same crop for every image of a batch (one pair of pooling matrices, broadcast)
    ((3, 3), (8, 8), [(5, 5), (5, 5)], 27 / 4),
])
def test_crop_rounds_up_per_feature_map(map_size, input_size, valid_sizes, crop_mean):
    """valid region = ceil(h*hf/H) x ceil(w*wf/W); input_size overrides inputs.shape.

    With grid (1, 1) the fitted threshold is 0.5 * the mean of the valid crop: a crop rounded
    down, not taken, or with rows and columns swapped gives another number.
    """
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    maps = powers_of_two_map(*map_size, copies=len(valid_sizes))
    batch = ImageBatch(maps, valid_sizes=valid_sizes, input_size=input_size)
    scorer = ImageScorer(model, grid=(1, 1)).fit([batch])
    assert float(scorer.thresholds[0, 0]) == pytest.approx(0.5 * crop_mean, rel=1e-12)


def test_crop_known_masks_and_scores():
    """Hand-computed masks and scores where ceil, floor and no crop disagree."""
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    fitted = powers_of_two_map(3, 3)  # [[1, 2, 4], [8, 16, 32], [64, 128, 256]]
    # valid 5x5 of 8x8 -> crop [[1, 2], [8, 16]] (floor: [[1]]), already 2x2: t = 8
    scorer = ImageScorer(model, grid=(2, 2)).fit(
        [ImageBatch(fitted, valid_sizes=[(5, 5)], input_size=(8, 8))])
    assert float(scorer.thresholds[0, 0]) == 8.0
    assert scorer.masks[0][0, 0].tolist() == [[False, False], [True, True]]
    # image 0: the same crop -> M_I = M, score 0; image 1: all valid, the 3x3 map pools to
    # [[6.75, 13.5], [54, 108]] -> M_I = [[0, 1], [1, 1]]: IoU 2/3
    both = ImageBatch(powers_of_two_map(3, 3, copies=2), valid_sizes=[(5, 5), (8, 8)], input_size=(8, 8))
    scores, details = scorer.score([both], details=True)
    assert scores.tolist() == [0.0, pytest.approx(math.log(2 / 3), rel=1e-12)]
    assert details["image_mask_size"].tolist() == [[2.0], [3.0]]


# ------------------------------------------------------------------ invariances
def test_fit_order_invariance():
    model = make_net()
    batches = make_batches(4, 3, seed=3)
    imgs = torch.cat(batches)
    perm = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(0))
    shuffled = list(imgs[perm].split(5))
    a = ImageScorer(model, layers=LAYERS).fit(batches)
    b = ImageScorer(model, layers=LAYERS).fit(shuffled)
    for ma, mb in zip(a.masks, b.masks):
        assert torch.equal(ma, mb)
    torch.testing.assert_close(a.thresholds, b.thresholds, rtol=1e-14, atol=0)
    torch.testing.assert_close(a.score(batches), b.score(batches), rtol=1e-14, atol=0)


@pytest.mark.parametrize("grid,padded", [(None, False), ((3, 3), True)])
def test_score_batch_size_invariance(grid, padded):
    model = make_net()
    scorer = ImageScorer(model, layers=LAYERS, grid=grid).fit(make_batches(2, 4, seed=1, padded=padded))
    batches = make_batches(1, 7, seed=2, padded=padded)
    full = scorer.score(batches)

    def split(bs):
        b = batches[0]
        x = b.inputs if padded else b
        out = []
        for i in range(0, 7, bs):
            if padded:
                out.append(ImageBatch(x[i:i + bs], valid_sizes=b.valid_sizes[i:i + bs]))
            else:
                out.append(x[i:i + bs])
        return out

    for bs in (1, 2, 3):
        torch.testing.assert_close(scorer.score(split(bs)), full, rtol=1e-12, atol=1e-12)


def test_all_reduce_equals_single_process_fit():
    """Simulated 2-rank fit: rank 1's accumulators summed into rank 0's equal one fit on all."""
    model = make_net()
    data = make_batches(4, 3, seed=4, num_classes=3)
    rank0, rank1 = data[:2], data[2:]
    captured = []
    ImageScorer(model, layers=LAYERS, grid=(2, 2), num_classes=3).fit(
        rank1, all_reduce=lambda t: captured.append(t.clone()))
    assert len(captured) == len(LAYERS) + 1
    assert all(t.dtype == torch.float64 for t in captured)
    it = iter(captured)
    reduced = ImageScorer(model, layers=LAYERS, grid=(2, 2), num_classes=3).fit(
        rank0, all_reduce=lambda t: t.add_(next(it)))
    single = ImageScorer(model, layers=LAYERS, grid=(2, 2), num_classes=3).fit(data)
    for a, b in zip(reduced.masks, single.masks):
        assert torch.equal(a, b)
    torch.testing.assert_close(reduced.class_counts, single.class_counts)
    torch.testing.assert_close(reduced.score(data), single.score(data))


# ------------------------------------------------------------------ save / load
def test_save_load_round_trip(tmp_path):
    model = make_net()
    fit_b = make_batches(2, 4, seed=1, padded=True, num_classes=2)
    fit_b[0].labels = [0, 1, 0, 1]
    scorer = ImageScorer(model, layers=LAYERS, similarity="recall", threshold_ratio=0.6,
                         grid=(3, 2), num_classes=2).fit(fit_b)
    path = tmp_path / "sub" / "scorer.pt"
    scorer.save(path)
    assert os.listdir(path.parent) == ["scorer.pt"]  # no temp file left
    state = torch.load(path, weights_only=True)
    assert state["version"] == FORMAT_VERSION and state["masks"][0].dtype == torch.bool
    loaded = ImageScorer.load(path, model)
    assert loaded.is_fitted and loaded.layer_names == LAYERS
    assert (loaded.similarity, loaded.threshold_ratio, loaded.grid, loaded.num_classes) == (
        "recall", 0.6, (3, 2), 2)
    assert torch.equal(loaded.score(fit_b), scorer.score(fit_b))
    assert torch.equal(loaded.mask_sizes(), scorer.mask_sizes())


def old_layout_state(**changes):
    """The dict ImageScorer.save wrote before scoring/ was split (format version 1), by hand.

    One layer 'a' of 4 neurons, fitted on [[1, 1, 0, 0], [1, 0, 0, 0]]: mean [1, .5, 0, 0],
    t = .5, M = [1, 1, 0, 0] (as in test_hand_computed_overlap).
    """
    state = {
        "format": "imagescore_det.scoring.ImageScorer",
        "version": 1,
        "layer_names": ["a"],
        "shapes": [[4]],
        "thresholds": torch.tensor([[0.5]], dtype=torch.float64),
        "masks": [torch.tensor([[True, True, False, False]])],
        "class_counts": torch.tensor([2.0], dtype=torch.float64),
        "similarity": "iou",
        "threshold_ratio": 0.5,
        "grid": None,
        "num_classes": None,
    }
    state.update(changes)
    return state


def test_file_in_the_old_layout_loads(tmp_path):
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    path = tmp_path / "old.pt"
    with open(path, "wb") as file:  # what the old save did: torch.save into the temp file
        torch.save(old_layout_state(), file)
    loaded = ImageScorer.load(path, model)
    assert loaded.layer_names == ["a"] and loaded.layer_shapes == [(4,)]
    assert (loaded.similarity, loaded.threshold_ratio, loaded.grid, loaded.num_classes) == (
        "iou", 0.5, None, None)
    assert loaded.masks[0].tolist() == [[True, True, False, False]]
    assert loaded.mask_sizes().tolist() == [2]
    scores = loaded.score([torch.tensor([[0.0, 0.7, 0.5, 0.49]])])  # M_I = [0, 1, 1, 0]: IoU 1/3
    assert scores.tolist() == [pytest.approx(math.log(1 / 3), rel=1e-12)]


def test_old_layout_per_class_grid_file_loads(tmp_path):
    """Per class, recall and a grid: class 0 has M = [1, 0] (t = .5), class 1 M = [0, 1] (t = 1)."""
    state = old_layout_state(
        shapes=[[1, 1, 2]], thresholds=torch.tensor([[0.5], [1.0]], dtype=torch.float64),
        masks=[torch.tensor([[[[True, False]]], [[[False, True]]]])],
        class_counts=torch.tensor([1.0, 1.0], dtype=torch.float64),
        similarity="recall", grid=[1, 2], num_classes=2)
    path = tmp_path / "old.pt"
    with open(path, "wb") as file:
        torch.save(state, file)
    loaded = ImageScorer.load(path, nn.Sequential(OrderedDict(a=nn.ReLU())))
    assert (loaded.similarity, loaded.grid, loaded.num_classes) == ("recall", (1, 2), 2)
    images = torch.zeros(2, 1, 2, 4, dtype=torch.float64)
    images[:, :, :, :2] = 1.0  # pools to [1, 0]: M_I = [1, 0] at t = .5 and at t = 1
    scores = loaded.score([ImageBatch(images, labels=[0, 1])])
    assert scores.tolist() == [0.0, pytest.approx(FLOOR)]


def test_save_writes_the_old_layout_byte_for_byte(tmp_path):
    """The split kept the file format: same dict, same bytes as torch.save of the old dict."""
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    scorer = ImageScorer(model).fit([torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])])
    state, expected = scorer.state_dict(), old_layout_state()
    assert list(state) == list(expected)
    for key, value in expected.items():
        if key == "masks":
            assert [m.dtype for m in state[key]] == [torch.bool]
            assert [m.tolist() for m in state[key]] == [m.tolist() for m in value]
        elif isinstance(value, torch.Tensor):
            assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
        else:
            assert state[key] == value and type(state[key]) is type(value), key
    scorer.save(tmp_path / "new.pt")
    with open(tmp_path / "old.pt", "wb") as file:
        torch.save(expected, file)
    assert (tmp_path / "new.pt").read_bytes() == (tmp_path / "old.pt").read_bytes()


def test_load_mismatches(tmp_path):
    model = make_net()
    scorer = ImageScorer(model, layers=LAYERS).fit(make_batches(1, 2))
    path = tmp_path / "s.pt"
    scorer.save(path)

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def forward(self, x):
            return self.net(x)

    with pytest.raises(ValueError, match="missing.*relu1.*close matches.*'net.relu1'"):
        ImageScorer.load(path, Renamed())
    with pytest.raises(ValueError, match=r"saved-only \['relu3'\]"):
        ImageScorer.load(path, model, layers=["relu1", "relu2"])
    other = make_net()
    other.conv1 = nn.Conv2d(3, 4, 3, padding=1).double()
    ImageScorer.load(path, other)  # same architecture: fine
    wide = SmallNet()
    wide.relu1 = nn.Identity()
    wide.relu2 = nn.Conv2d(4, 7, 1)
    with pytest.raises(ValueError, match="relu2.*6 channels.*has 7"):
        ImageScorer.load(path, wide)
    st = torch.load(path, weights_only=True)
    st["version"] = FORMAT_VERSION + 1
    torch.save(st, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="format version"):
        ImageScorer.load(tmp_path / "v.pt", model)
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a file written by ImageScorer.save"):
        ImageScorer.load(tmp_path / "x.pt", model)
    with pytest.raises(RuntimeError, match="not fitted"):
        ImageScorer(model).save(tmp_path / "y.pt")


def test_loaded_scorer_detects_shape_change_at_score(tmp_path):
    model = make_net()
    scorer = ImageScorer(model, layers=LAYERS).fit(make_batches(1, 2))
    with pytest.raises(ValueError, match="grid=None.*grid=\\(h, w\\)"):
        scorer.score([torch.randn(2, 3, 8, 8, dtype=torch.float64)])


# ------------------------------------------------------------------ diagnostics, per class
def test_details_and_explain():
    model = make_net()
    b = make_batches(2, 3)
    scorer = ImageScorer(model, layers=LAYERS).fit(b)
    s, d = scorer.score(b, details=True)
    for key in ("ratio", "log_ratio", "image_mask_size", "intersection", "dataset_mask_size"):
        assert d[key].shape == (6, 3) and d[key].dtype == torch.float64
    torch.testing.assert_close(d["log_ratio"].sum(1), s)
    assert d["layer_names"] == LAYERS and d["num_neurons"] == [4 * 12 * 10, 6 * 6 * 5, 5]
    assert scorer.mask_sizes().shape == (3,)
    text = ImageScorer.explain(d, 0)
    assert "relu2" in text and "score =" in text


def test_per_class_uses_predicted_class_mask():
    model = nn.Sequential(OrderedDict(a=nn.ReLU()))
    fit = [ImageBatch(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), labels=[0, 1])]
    scorer = ImageScorer(model, num_classes=3)
    with pytest.warns(RuntimeWarning, match=r"no fitted image has class \[2\]"):
        scorer.fit(fit)
    assert scorer.mask_sizes().tolist() == [[1], [1], [0]]
    x = torch.tensor([[1.0, 0, 0]])
    assert scorer.score([ImageBatch(x, labels=[0])]).tolist() == [0.0]
    assert scorer.score([ImageBatch(x, labels=[1])]).tolist() == [pytest.approx(FLOOR)]
    with pytest.raises(ValueError, match=r"predicted as class \[2\]"):
        scorer.score([ImageBatch(x, labels=[2])])
    with pytest.raises(ValueError, match="needs"):
        scorer.score([x])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        scorer.score([ImageBatch(x, labels=[3])])


def test_empty_dataset_mask_is_skipped_and_warned():
    model = nn.Sequential(OrderedDict(id=nn.Identity(), a=nn.ReLU()))
    fit = [torch.tensor([[-1.0, -2.0], [-1.0, -3.0]])]  # layer 'id': max mean -1 -> t=-0.5 > max
    scorer = ImageScorer(model, layers=["id", "a"])
    with pytest.warns(RuntimeWarning, match=r"\['id'\].*skipped"):
        scorer.fit(fit)
    assert scorer.skipped_layers() == ["id"]
    s, d = scorer.score(fit, details=True)
    assert s.tolist() == [0.0, 0.0]
    assert math.isnan(d["ratio"][0, 0]) and d["log_ratio"][0, 0] == 0


# ------------------------------------------------------------------ hooks, modes, grads
def assert_clean(model):
    for m in model.modules():
        assert not m._forward_hooks


def test_hooks_removed_modes_and_grad_restored_even_on_error():
    model = make_net()
    model.train()
    model.conv1.eval()
    model.conv2.weight.requires_grad_(False)
    scorer = ImageScorer(model, layers=LAYERS)
    seen = {}
    model.relu1.register_forward_pre_hook(
        lambda m, i: seen.update(training=model.training, grad=torch.is_grad_enabled()))
    scorer.fit(make_batches(1, 2))
    assert seen == {"training": False, "grad": False}
    bad = [torch.full((1, 3, 12, 10), float("nan"), dtype=torch.float64)]
    with pytest.raises(FloatingPointError, match="'relu1'"):
        scorer.score(bad)
    assert model.training and not model.conv1.training and model.relu1.training
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------ bad input
def test_bad_input_errors():
    model = make_net()
    with pytest.raises(ValueError, match="close matches: 'relu1'"):
        ImageScorer(model, layers=["relu_1"])
    with pytest.raises(ValueError, match="fully matches no module"):
        ImageScorer(model, layers=r"block\d")
    with pytest.raises(ValueError, match="similarity"):
        ImageScorer(model, similarity="dice")
    with pytest.raises(ValueError, match="threshold_ratio"):
        ImageScorer(model, threshold_ratio=0)
    with pytest.raises(ValueError, match="grid"):
        ImageScorer(model, grid=(0, 2))
    scorer = ImageScorer(model, layers=LAYERS)
    with pytest.raises(RuntimeError, match="not fitted.*fit"):
        scorer.score(make_batches(1, 2))
    with pytest.raises(ValueError, match="no images"):
        scorer.fit([])
    with pytest.raises(ValueError, match="no images"):
        scorer.fit([torch.zeros(0, 3, 12, 10, dtype=torch.float64)])
    assert not scorer.is_fitted
    with pytest.raises(FloatingPointError, match="'relu1'.*non-finite"):
        scorer.fit([torch.full((2, 3, 12, 10), float("inf"), dtype=torch.float64)])
    with pytest.raises(ValueError, match="grid=None requires all images to have equal shapes"):
        scorer.fit([torch.randn(1, 3, 12, 10, dtype=torch.float64),
                    torch.randn(1, 3, 8, 8, dtype=torch.float64)])
    with pytest.raises(ValueError, match="grid=None cannot crop"):
        scorer.fit([ImageBatch(torch.randn(2, 3, 12, 10, dtype=torch.float64),
                               valid_sizes=[(12, 10), (6, 10)])])
    scorer.fit(make_batches(1, 2))
    with pytest.raises(ValueError, match="no images"):
        scorer.score(iter([]))
    with pytest.raises(ValueError, match="2 valid_sizes"):
        ImageScorer(model, layers=LAYERS, grid=(2, 2)).fit(
            [ImageBatch(torch.randn(3, 3, 12, 10, dtype=torch.float64), valid_sizes=[(1, 1)] * 2)])
    assert_clean(model)


def test_non_tensor_output_and_reused_module_errors():
    class TupleOut(nn.Module):
        def forward(self, x):
            return x, x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = TupleOut()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.relu(self.t(x)[0]))

    model = Net()
    with pytest.raises(TypeError, match="'t' returned a tuple"):
        ImageScorer(model, layers=["t"]).fit([torch.randn(2, 4)])
    with pytest.raises(RuntimeError, match="'relu' ran 2 times"):
        ImageScorer(model).fit([torch.randn(2, 4)])
    assert_clean(model)


def test_layer_resolution():
    model = make_net()
    assert resolve_layers(model) == LAYERS
    assert resolve_layers(model, r"relu[12]") == ["relu1", "relu2"]
    assert resolve_layers(model, re.compile("conv.")) == ["conv1", "conv2"]
    assert resolve_layers(model, lambda n, m: isinstance(m, nn.Linear)) == ["fc"]
    assert resolve_layers(model, ["relu3", "conv1", r"relu\d"]) == ["conv1", "relu1", "relu2", "relu3"]
    with pytest.raises(ValueError, match="has none"):
        ImageScorer(nn.Sequential(nn.Linear(2, 2)))


def test_word_popcount_matches_bool_sum():
    from imagescore_det.scoring.kernels import _as_words, _count_words
    g = torch.Generator().manual_seed(0)
    for K in (64, 72, 8 * 1009, 4096, 3 * 2**17):
        for p in (0.0, 0.3, 1.0):
            m = torch.rand(5, K, generator=g) < p
            w = _as_words(m)
            assert w is not None
            assert torch.equal(_count_words(w), m.sum(1))
    assert _as_words(torch.zeros(2, 68, dtype=torch.bool)) is None  # K % 8 != 0: fallback
