"""Tests of imagescore_det.modeling: the VGG16 backbone and the fc6/fc7 box head."""
import math

import pytest
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from imagescore_det.engine import get_imagescore_cfg
from imagescore_det.modeling import VGG16, VGG16BoxHead, build_vgg16_backbone
from imagescore_det.modeling.vgg import VGG16_CONV_NAMES

CONV_NAMES = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
FULL_CHANNELS = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
STAGE_STRIDE = {1: 1, 2: 2, 3: 4, 4: 8, 5: 16}
# parameters of torchvision.models.vgg16(weights=None).features (13 convs with bias)
TORCHVISION_VGG16_FEATURES_PARAMS = 14_714_688


def stage(name):
    return int(name[4])


def pooled(n, times):
    """Spatial size after ``times`` 2x2/2 max-pools (floor), as F.max_pool2d does."""
    for _ in range(times):
        n //= 2
    return n


def conv_params(model):
    return sum(p.numel() for n in CONV_NAMES for p in getattr(model, n).parameters())


# --------------------------------------------------------------------------- backbone


def test_full_width_layout_and_param_count():
    m = VGG16()
    assert VGG16_CONV_NAMES == tuple(CONV_NAMES)
    convs = [n for n, c in m.named_children()]
    assert convs == CONV_NAMES
    for n in CONV_NAMES:
        conv = getattr(m, n)
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert conv.out_channels == FULL_CHANNELS[n[:5]]
        assert conv.bias is not None and conv.norm is None
    assert m.conv1_1.in_channels == 3
    ours = sum(p.numel() for p in m.parameters())
    assert ours == conv_params(m) == TORCHVISION_VGG16_FEATURES_PARAMS
    tv = pytest.importorskip("torchvision")
    # what torchvision.models.vgg16 builds as .features (without its 120M-param classifier)
    feats = tv.models.vgg.make_layers(tv.models.vgg.cfgs["D"], batch_norm=False)
    assert sum(p.numel() for p in feats.parameters()) == ours
    # same shapes, in the same order, as torchvision's convs
    tv_shapes = [tuple(c.weight.shape) for c in feats if isinstance(c, nn.Conv2d)]
    assert tv_shapes == [tuple(getattr(m, n).weight.shape) for n in CONV_NAMES]


@pytest.mark.parametrize("hw", [(64, 64), (65, 97), (33, 50), (17, 31)])
def test_output_stride_16_and_shapes(hw):
    m = VGG16(width_mult=0.125).eval()
    assert m.output_shape() == {"conv5_3": ShapeSpec(channels=64, stride=16)}
    assert m.size_divisibility == 0  # no padding requirement: floor pooling like Caffe
    with torch.no_grad():
        out = m(torch.randn(2, 3, *hw))
    assert list(out) == ["conv5_3"]
    h, w = hw
    assert out["conv5_3"].shape == (2, 64, pooled(h, 4), pooled(w, 4))
    assert (out["conv5_3"] >= 0).all()  # ReLU after the last conv


def test_out_features_subsets_strides_channels_and_truncation():
    feats = ["conv1_2", "conv3_3", "conv4_1"]
    m = VGG16(width_mult=0.25, out_features=feats).eval()
    shapes = m.output_shape()
    assert list(shapes) == feats
    for f in feats:
        assert shapes[f].stride == STAGE_STRIDE[stage(f)]
        assert shapes[f].channels == FULL_CHANNELS[f[:5]] // 4
    # layers after the last requested output are not built
    assert [n for n, _ in m.named_children()] == CONV_NAMES[:CONV_NAMES.index("conv4_1") + 1]
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        out = m(x)
    assert list(out) == feats
    for f in feats:
        s = stage(f) - 1
        assert out[f].shape == (1, shapes[f].channels, pooled(70, s), pooled(45, s))
    # the output is the same as running the layers by hand
    with torch.no_grad():
        y = m.conv1_2(m.conv1_1(x))
        assert torch.allclose(out["conv1_2"], y)
        y = torch.nn.functional.max_pool2d(y, 2, 2)
        y = m.conv2_2(m.conv2_1(y))
        y = torch.nn.functional.max_pool2d(y, 2, 2)
        y = m.conv3_3(m.conv3_2(m.conv3_1(y)))
        assert torch.allclose(out["conv3_3"], y)
        y = m.conv4_1(torch.nn.functional.max_pool2d(y, 2, 2))
        assert torch.allclose(out["conv4_1"], y)


def test_every_single_out_feature():
    for f in CONV_NAMES:
        m = VGG16(width_mult=0.0625, out_features=[f])
        spec = m.output_shape()[f]
        assert spec.stride == STAGE_STRIDE[stage(f)]
        assert spec.channels == FULL_CHANNELS[f[:5]] // 16
        assert [n for n, _ in m.named_children()][-1] == f


@pytest.mark.parametrize("mult,expected", [
    (0.5, [32, 64, 128, 256, 256]),
    (0.125, [8, 16, 32, 64, 64]),
    (0.0625, [4, 8, 16, 32, 32]),
    (0.01, [1, 1, 3, 5, 5]),     # round(), never below one channel
    (1.5, [96, 192, 384, 768, 768]),
])
def test_width_multiplier_channels(mult, expected):
    m = VGG16(width_mult=mult, out_features=CONV_NAMES)
    got = [m.output_shape()[f"conv{s}_2"].channels for s in range(1, 6)]
    assert got == expected
    for n in CONV_NAMES:
        assert getattr(m, n).out_channels == expected[stage(n) - 1]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = m(x)
    assert out["conv5_3"].shape[1] == expected[-1]


@pytest.mark.parametrize("bad", [0, -0.5])
def test_bad_width_is_value_error(bad):
    with pytest.raises(ValueError, match="WIDTH_MULT"):
        VGG16(width_mult=bad)


@pytest.mark.parametrize("bad", [["conv6_1"], ["conv5_3", "pool5"], ["res4"]])
def test_unknown_out_feature_is_value_error(bad):
    with pytest.raises(ValueError, match="OUT_FEATURES") as e:
        VGG16(out_features=bad)
    assert "conv5_3" in str(e.value)  # lists the valid names


def test_group_norm_on_thin_layers():
    # width 0.0625: 4..32 channels, fewer than GN's 32 groups on most layers
    m = VGG16(width_mult=0.0625, norm="GN", out_features=CONV_NAMES).train()
    for n in CONV_NAMES:
        conv = getattr(m, n)
        assert isinstance(conv.norm, nn.GroupNorm)
        c = conv.out_channels
        assert conv.norm.num_channels == c
        assert conv.norm.num_groups == math.gcd(32, c) and c % conv.norm.num_groups == 0
        assert conv.bias is None  # a norm follows the conv
    out = m(torch.randn(2, 3, 48, 40))
    out["conv5_3"].sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    # GN normalises per sample: outputs do not depend on the other images of the batch
    m.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
        # float32 convs may pick another algorithm for batch 1 vs 2: ~1e-5 apart on O(1)
        # values; a batch dependence (BN-like statistics) would be O(0.1)
        torch.testing.assert_close(m(x)["conv5_3"][:1], m(x[:1])["conv5_3"], rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("norm,cls", [("", None), ("BN", nn.BatchNorm2d), ("GN", nn.GroupNorm),
                                      ("FrozenBN", FrozenBatchNorm2d)])
def test_norm_options(norm, cls):
    m = VGG16(width_mult=0.125, norm=norm)
    for n in CONV_NAMES:
        conv = getattr(m, n)
        if cls is None:
            assert conv.norm is None and conv.bias is not None
        else:
            assert type(conv.norm) is cls and conv.bias is None
    m.train()
    y = m(torch.randn(2, 3, 32, 32))["conv5_3"]
    assert torch.isfinite(y).all()


def test_bn_statistics_update_in_train_mode():
    m = VGG16(width_mult=0.0625, norm="BN", out_features=["conv1_1"]).train()
    before = m.conv1_1.norm.running_mean.clone()
    m(torch.randn(4, 3, 16, 16) + 3.0)
    assert not torch.equal(before, m.conv1_1.norm.running_mean)


@pytest.mark.parametrize("freeze_at", [0, 1, 3, 5])
def test_freeze_at(freeze_at):
    m = VGG16(width_mult=0.0625, norm="BN", freeze_at=freeze_at)
    for n in CONV_NAMES:
        conv = getattr(m, n)
        frozen = stage(n) <= freeze_at
        assert all(p.requires_grad != frozen for p in conv.parameters()), n
        assert isinstance(conv.norm, FrozenBatchNorm2d if frozen else nn.BatchNorm2d), n
    m.train()
    out = m(torch.randn(2, 3, 16, 16))["conv5_3"]
    if freeze_at < 5:
        out.sum().backward()
        for n in CONV_NAMES:
            w = getattr(m, n).weight
            assert (w.grad is None) == (stage(n) <= freeze_at), n
    else:
        assert not out.requires_grad


def test_freeze_plain_vgg_without_norm():
    m = VGG16(width_mult=0.125, freeze_at=2)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen == {f"{c}.{k}" for c in CONV_NAMES[:4] for k in ("weight", "bias")}


def test_forward_rejects_non_4d():
    with pytest.raises(ValueError, match="N, C, H, W"):
        VGG16(width_mult=0.0625)(torch.randn(3, 32, 32))


def test_build_from_config():
    cfg = get_imagescore_cfg()
    cfg.MODEL.VGG.WIDTH_MULT = 0.25
    cfg.MODEL.VGG.NORM = "GN"
    cfg.MODEL.VGG.OUT_FEATURES = ["conv4_3", "conv5_3"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    m = build_vgg16_backbone(cfg, ShapeSpec(channels=3))
    assert m.output_shape() == {"conv4_3": ShapeSpec(channels=128, stride=8),
                                "conv5_3": ShapeSpec(channels=128, stride=16)}
    assert isinstance(m.conv1_1.norm, nn.GroupNorm)
    assert not m.conv1_2.weight.requires_grad and m.conv2_1.weight.requires_grad


# --------------------------------------------------------------------------- box head


def test_box_head_shapes():
    cfg = get_imagescore_cfg()
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 48
    cfg.MODEL.ROI_BOX_HEAD.DROPOUT = 0.0
    head = VGG16BoxHead(cfg, ShapeSpec(channels=16, height=7, width=7))
    assert head.fc6.weight.shape == (48, 16 * 7 * 7) and head.fc6.bias.shape == (48,)
    assert head.fc7.weight.shape == (48, 48) and head.fc7.bias.shape == (48,)
    assert head.output_shape == ShapeSpec(channels=48)
    x = torch.randn(5, 16, 7, 7)
    y = head(x)
    assert y.shape == (5, 48)
    ref = torch.relu(head.fc7(torch.relu(head.fc6(x.flatten(1)))))
    assert torch.allclose(y, ref)


def test_box_head_dropout():
    cfg = get_imagescore_cfg()
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_BOX_HEAD.DROPOUT = 0.5
    head = VGG16BoxHead(cfg, ShapeSpec(channels=4, height=7, width=7))
    x = torch.randn(8, 4, 7, 7)
    head.eval()
    assert torch.equal(head(x), head(x))  # no dropout at test time
    head.train()
    torch.manual_seed(0)
    a = head(x)
    assert not torch.equal(a, head(x))  # dropout is on while training


# --------------------------------------------------------------------------- full model


def _inputs(with_instances):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w, boxes, classes in [(80, 96, [[10, 12, 40, 50], [50, 20, 90, 70]], [0, 2]),
                                 (88, 80, [[5, 5, 30, 33]], [3])]:
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
             "height": h, "width": w}
        if with_instances:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            inst.gt_classes = torch.tensor(classes)
            d["instances"] = inst
        batch.append(d)
    return batch


def test_full_model_train_and_eval(tiny_cfg):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "backbone.conv1_1.weight"
    for n in CONV_NAMES:
        assert f"backbone.{n}.weight" in names
    for n in ("roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc6.bias",
              "roi_heads.box_head.fc7.weight", "roi_heads.box_head.fc7.bias"):
        assert n in names
    assert model.backbone.conv5_3.out_channels == 32  # 512 * 0.0625
    assert model.roi_heads.box_head.fc6.weight.shape == (32, 32 * 7 * 7)  # FC_DIM 32
    assert model.roi_heads.box_predictor.cls_score.out_features == 5  # 4 classes + bg

    model.train()
    with EventStorage(0):
        losses = model(_inputs(True))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.conv1_1.weight.grad is not None
    assert model.roi_heads.box_head.fc6.weight.grad is not None

    model.eval()
    with torch.no_grad():
        out = model(_inputs(False))
    assert len(out) == 2
    for o, (h, w) in zip(out, [(80, 96), (88, 80)]):
        inst = o["instances"]
        assert inst.image_size == (h, w)
        if len(inst):
            b = inst.pred_boxes.tensor
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
            assert ((inst.pred_classes >= 0) & (inst.pred_classes < 4)).all()


# --------------------------------------------------------------------------- ImageNet weights


def _load_converter():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "convert_vgg16_to_d2.py")
    spec = importlib.util.spec_from_file_location("convert_vgg16_to_d2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_convert_torchvision_vgg16_and_load_into_full_model(tmp_path):
    """The path users take with ImageNet weights: torchvision .pth -> .pkl -> MODEL.WEIGHTS."""
    import os
    import pickle

    import numpy as np
    tv = pytest.importorskip("torchvision")
    from detectron2.checkpoint import DetectionCheckpointer

    from conftest import REPO
    from imagescore_det.engine import load_config

    conv = _load_converter()
    torch.manual_seed(1234)
    src_sd = tv.models.vgg16(weights=None).state_dict()
    src = tmp_path / "vgg16.pth"
    torch.save(src_sd, src)
    dst = tmp_path / "vgg16_d2.pkl"
    assert conv.main([str(src), str(dst)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["vgg16.pth", "vgg16_d2.pkl"]  # no temp files left

    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is False
    model_w = data["model"]
    expected_names = {f"backbone.{n}.{p}" for n in CONV_NAMES for p in ("weight", "bias")} | {
        f"roi_heads.box_head.{n}.{p}" for n in ("fc6", "fc7") for p in ("weight", "bias")}
    assert set(model_w) == expected_names  # classifier.6 (ImageNet's 1000 classes) dropped
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in model_w.values())

    cfg = load_config(os.path.join(REPO, "configs", "faster_rcnn_V16_voc07.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(dst)])
    # torchvision's vgg16().features: conv, ReLU (, max-pool) ... (written out, not imported)
    pairs = list(zip((0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), CONV_NAMES))
    with torch.no_grad():
        model = build_model(cfg)
        assert not torch.equal(model.backbone.conv3_1.weight, src_sd["features.10.weight"])
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        for idx, name in pairs:
            layer = getattr(model.backbone, name)
            assert torch.equal(layer.weight, src_sd[f"features.{idx}.weight"]), name
            assert torch.equal(layer.bias, src_sd[f"features.{idx}.bias"]), name
        head = model.roi_heads.box_head
        for tv_name, fc in (("classifier.0", head.fc6), ("classifier.3", head.fc7)):
            assert torch.equal(fc.weight, src_sd[f"{tv_name}.weight"]), tv_name
            assert torch.equal(fc.bias, src_sd[f"{tv_name}.bias"]), tv_name
    # frozen stages stay frozen after loading (FREEZE_AT 2 in Base-RCNN-VGG16.yaml)
    assert not model.backbone.conv2_2.weight.requires_grad
    assert model.backbone.conv3_1.weight.requires_grad


def test_convert_rejects_non_vgg16(tmp_path):
    tv = pytest.importorskip("torchvision")
    conv = _load_converter()
    # vgg16_bn's features (conv, BN, ReLU, ...): indices differ and it has BN statistics
    bn = tv.models.vgg.make_layers(tv.models.vgg.cfgs["D"], batch_norm=True)
    sd = {f"features.{k}": v for k, v in bn.state_dict().items()}
    with pytest.raises(conv.ConversionError, match="vgg16_bn"):
        conv.convert_state_dict(sd)
    # a ResNet-like state dict
    with pytest.raises(conv.ConversionError, match="not a torchvision VGG16"):
        conv.convert_state_dict({"conv1.weight": torch.zeros(64, 3, 7, 7)})
    # VGG16 names with wrong shapes (e.g. a width-reduced net)
    sd = {f"features.{i}.{p}": torch.zeros(8 if i < 5 else 16, 3 if i == 0 else 8, 3, 3)
          if p == "weight" else torch.zeros(8) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
          for p in ("weight", "bias")}
    with pytest.raises(conv.ConversionError, match=r"features.0 \(conv1_1\)"):
        conv.convert_state_dict(sd, include_fc=False)
    # features only, no classifier: an error suggesting --backbone-only
    feats = tv.models.vgg.make_layers(tv.models.vgg.cfgs["D"], batch_norm=False)
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    with pytest.raises(conv.ConversionError, match="--backbone-only"):
        conv.convert_state_dict(sd)
    out = conv.convert_state_dict(sd, include_fc=False)
    assert len(out) == 26 and "backbone.conv5_3.bias" in out
    # files: not a torch file, not a dict, missing; the CLI exits non-zero with the message
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    dst = tmp_path / "out.pkl"
    for path, msg in ((bad, "cannot read"), (tmp_path / "missing.pth", "does not exist")):
        with pytest.raises(SystemExit) as e:
            conv.main([str(path), str(dst)])
        assert msg in str(e.value.code) and str(path) in str(e.value.code)
    tensor_file = tmp_path / "t.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(SystemExit, match="expected a state dict"):
        conv.main([str(tensor_file), str(dst)])
    assert not dst.exists()
