"""VGG16 backbone and box head in the py-faster-rcnn layout, registered in Detectron2.

Backbone: 13 3x3 convs (conv1_1 ... conv5_3) with ReLU, max-pooling after conv1_2, conv2_2,
conv3_3 and conv4_3, no pool5, so conv5_3 has stride 16. Box head: RoI pooling 7x7 (set by
the config) then fc6 and fc7 with ReLU (4096-d in the real model).

Parameter names follow the Caffe/py-faster-rcnn names (``backbone.conv1_1.weight``,
``roi_heads.box_head.fc6.weight``), so ImageNet VGG16 weights load after a name conversion
(tools/convert_vgg16_to_d2.py).
"""
import math

import numpy as np
import torch.nn.functional as F
from torch import nn

import fvcore.nn.weight_init as weight_init

from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_BOX_HEAD_REGISTRY, Backbone

# (stage, number of convs, output channels of the full-width model)
VGG16_STAGES = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG16_CONV_NAMES = tuple(
    f"conv{s}_{i}" for s, n, _ in VGG16_STAGES for i in range(1, n + 1)
)


def _norm(norm, channels):
    """Detectron2's get_norm, except that GN adapts its group count to thin layers."""
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return get_norm(norm, channels)


class VGG16(Backbone):
    """VGG16 feature extractor. Outputs any of ``conv1_1 ... conv5_3`` (``out_features``)."""

    def __init__(self, in_channels=3, width_mult=1.0, norm="", out_features=("conv5_3",),
                 freeze_at=0):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"MODEL.VGG.WIDTH_MULT must be > 0, got {width_mult}")
        unknown = [f for f in out_features if f not in VGG16_CONV_NAMES]
        if unknown:
            raise ValueError(f"MODEL.VGG.OUT_FEATURES has unknown names {unknown}; "
                             f"choose from {list(VGG16_CONV_NAMES)}")
        self._out_features = list(out_features)
        self._out_feature_channels = {}
        self._out_feature_strides = {}
        self._stage_of = {}
        last = max(VGG16_CONV_NAMES.index(f) for f in out_features)
        stride, ch = 1, in_channels
        for stage, n, full_width in VGG16_STAGES:
            width = max(1, int(round(full_width * width_mult)))
            if stage > 1:
                stride *= 2  # the max-pool closing the previous stage
            for i in range(1, n + 1):
                name = f"conv{stage}_{i}"
                if VGG16_CONV_NAMES.index(name) > last:
                    break
                conv = Conv2d(ch, width, kernel_size=3, padding=1, bias=not norm,
                              norm=_norm(norm, width), activation=F.relu)
                self.add_module(name, conv)
                self._out_feature_channels[name] = width
                self._out_feature_strides[name] = stride
                self._stage_of[name] = stage
                ch = width
        self._conv_names = [n for n in VGG16_CONV_NAMES if n in self._stage_of]
        for name in self._conv_names:
            nn.init.kaiming_normal_(getattr(self, name).weight, mode="fan_out",
                                    nonlinearity="relu")
            if getattr(self, name).bias is not None:
                nn.init.zeros_(getattr(self, name).bias)
        self.freeze(freeze_at)

    def freeze(self, freeze_at=0):
        """Freeze the first ``freeze_at`` stages (their BN becomes FrozenBN), as ResNet does."""
        for name in self._conv_names:
            if self._stage_of[name] <= freeze_at:
                conv = getattr(self, name)
                for p in conv.parameters():
                    p.requires_grad = False
                setattr(self, name, FrozenBatchNorm2d.convert_frozen_batchnorm(conv))
        return self

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"VGG16 takes an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        outputs = {}
        stage = 1
        for name in self._conv_names:
            if self._stage_of[name] != stage:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                stage = self._stage_of[name]
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg, input_shape):
    """``MODEL.BACKBONE.NAME: build_vgg16_backbone`` (keys under ``MODEL.VGG``)."""
    return VGG16(
        in_channels=input_shape.channels,
        width_mult=cfg.MODEL.VGG.WIDTH_MULT,
        norm=cfg.MODEL.VGG.NORM,
        out_features=cfg.MODEL.VGG.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@ROI_BOX_HEAD_REGISTRY.register()
class VGG16BoxHead(nn.Module):
    """fc6 and fc7 of VGG16 on the pooled RoI features (``MODEL.ROI_BOX_HEAD.FC_DIM`` wide)."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        super().__init__()
        fc_dim = cfg.MODEL.ROI_BOX_HEAD.FC_DIM
        in_dim = int(np.prod((input_shape.channels, input_shape.height or 1,
                              input_shape.width or 1)))
        self.fc6 = nn.Linear(in_dim, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.dropout = cfg.MODEL.ROI_BOX_HEAD.DROPOUT
        for fc in (self.fc6, self.fc7):
            weight_init.c2_xavier_fill(fc)  # as Detectron2's FastRCNNConvFCHead
        self._output_size = fc_dim

    def forward(self, x):
        x = x.flatten(start_dim=1)
        for fc in (self.fc6, self.fc7):
            x = F.relu(fc(x))
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x

    @property
    def output_shape(self):
        return ShapeSpec(channels=self._output_size)
