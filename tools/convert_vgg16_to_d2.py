#!/usr/bin/env python
"""Convert torchvision's ImageNet VGG16 checkpoint to a Detectron2 weights file.

    python tools/convert_vgg16_to_d2.py vgg16-397923af.pth vgg16_imagenet_d2.pkl

then set ``MODEL.WEIGHTS vgg16_imagenet_d2.pkl`` (configs/faster_rcnn_V16_voc07.yaml does).

torchvision names the 13 convs ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}`` and the
fully connected layers ``classifier.{0,3,6}``. They become ``backbone.conv1_1`` ...
``backbone.conv5_3`` (imagescore_det.modeling.VGG16) and ``roi_heads.box_head.fc6`` /
``fc7`` (VGG16BoxHead); ``classifier.6`` (the 1000-way ImageNet classifier) is dropped.
The output is Detectron2's pickle format (``{"model": {name: ndarray}, "__author__": ...,
"matching_heuristics": False}``), so names are matched exactly when loading. The weights
expect RGB input normalised with ImageNet mean/std, as configs/Base-RCNN-VGG16.yaml sets.
"""
import argparse
import os
import pickle
import sys

import numpy as np

# torchvision index in vgg16().features of each conv, in order (ReLU/max-pool in between)
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
FC_MAP = (("classifier.0", "roi_heads.box_head.fc6", (4096, 512 * 7 * 7)),
          ("classifier.3", "roi_heads.box_head.fc7", (4096, 4096)))


class ConversionError(ValueError):
    """The input is not a torchvision VGG16 state dict."""


def _to_numpy(v):
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _unwrap(obj):
    """The state dict in ``obj``: a plain state dict, or one under "state_dict"/"model"."""
    if not isinstance(obj, dict):
        raise ConversionError(f"expected a state dict (a dict of tensors), got {type(obj).__name__}")
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict) and "features.0.weight" not in obj:
            obj = obj[key]
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def convert_state_dict(state_dict, include_fc=True):
    """Map a torchvision VGG16 state dict to ``{detectron2 name: float32 ndarray}``.

    Raises :class:`ConversionError` naming what is missing or mis-shaped when the input is
    not torchvision's ``vgg16`` (e.g. ``vgg16_bn``, VGG19, or another network).
    """
    sd = _unwrap(state_dict)
    expected = [f"features.{i}.{p}" for i in TORCHVISION_CONV_INDICES for p in ("weight", "bias")]
    if include_fc:
        expected += [f"{src}.{p}" for src, _, _ in FC_MAP for p in ("weight", "bias")]
    missing = [k for k in expected if k not in sd]
    if missing:
        hint = ""
        if any(".running_mean" in k for k in sd):
            hint = (" It has BatchNorm statistics: vgg16_bn is not supported (the py-faster-rcnn "
                    "VGG16 has no BatchNorm); use torchvision's vgg16 checkpoint.")
        elif include_fc and not any(k.startswith("classifier.") for k in sd):
            hint = " It has no classifier.* keys: pass --backbone-only to convert the convs only."
        raise ConversionError(
            f"not a torchvision VGG16 state dict: {len(missing)} expected keys are missing "
            f"(first: {missing[:4]}); keys found start with {sorted(sd)[:6]}.{hint}")
    extra_convs = sorted(k for k in sd if k.startswith("features.") and k.endswith(".weight")
                         and int(k.split(".")[1]) not in TORCHVISION_CONV_INDICES)
    if extra_convs:
        raise ConversionError(f"not a torchvision VGG16 state dict: it has more feature layers "
                              f"than VGG16 ({extra_convs[:4]}; VGG19 or vgg16_bn?)")

    out = {}
    in_ch = 3
    for idx, name, ch in zip(TORCHVISION_CONV_INDICES, CONV_NAMES, CONV_CHANNELS):
        w = _to_numpy(sd[f"features.{idx}.weight"])
        b = _to_numpy(sd[f"features.{idx}.bias"])
        if w.shape != (ch, in_ch, 3, 3) or b.shape != (ch,):
            raise ConversionError(
                f"features.{idx} ({name}) has weight {tuple(w.shape)} / bias {tuple(b.shape)}; "
                f"VGG16 has ({ch}, {in_ch}, 3, 3) / ({ch},)")
        out[f"backbone.{name}.weight"] = w.astype(np.float32)
        out[f"backbone.{name}.bias"] = b.astype(np.float32)
        in_ch = ch
    if include_fc:
        for src, dst, shape in FC_MAP:
            w, b = _to_numpy(sd[f"{src}.weight"]), _to_numpy(sd[f"{src}.bias"])
            if w.shape != shape or b.shape != shape[:1]:
                raise ConversionError(f"{src} has weight {tuple(w.shape)} / bias "
                                      f"{tuple(b.shape)}; VGG16 has {shape} / {shape[:1]}")
            out[f"{dst}.weight"] = w.astype(np.float32)
            out[f"{dst}.bias"] = b.astype(np.float32)
    return out


def convert_file(src, dst, include_fc=True):
    """Read ``src`` (torch.save'd state dict), write ``dst`` (Detectron2 .pkl) atomically."""
    import torch

    from imagescore_det.utils import atomic_write_bytes

    if not os.path.isfile(src):
        raise ConversionError(f"input checkpoint {src} does not exist")
    if not dst.endswith(".pkl"):
        raise ConversionError(f"output {dst} must end with .pkl (Detectron2 reads .pkl files as "
                              "its own weight format)")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or a pickle with non-tensor objects
        raise ConversionError(f"cannot read {src} as a PyTorch state dict ({e})") from None
    model = convert_state_dict(obj, include_fc=include_fc)
    data = {"model": model, "__author__": "torchvision", "matching_heuristics": False}
    atomic_write_bytes(dst, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="torchvision VGG16 checkpoint, e.g. vgg16-397923af.pth")
    p.add_argument("output", help="Detectron2 weights to write, e.g. vgg16_imagenet_d2.pkl")
    p.add_argument("--backbone-only", action="store_true",
                   help="convert conv1_1..conv5_3 only (no fc6/fc7)")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        model = convert_file(args.input, args.output, include_fc=not args.backbone_only)
    except ConversionError as e:
        sys.exit(f"error: {e}")
    n = sum(v.size for v in model.values())
    print(f"wrote {args.output}: {len(model)} tensors, {n:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
