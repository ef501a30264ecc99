"""Print what imagescore-det runs on: ``python -m imagescore_det.env``."""
import glob
import importlib
import os
import platform
import sys


def _version(name):
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - report any import failure
        return f"not importable ({type(e).__name__}: {e})"
    return getattr(mod, "__version__", "?") + f" @ {os.path.dirname(mod.__file__)}"


def collect_env_info():
    """Return a list of (name, value) rows describing the environment."""
    rows = [("sys.platform", sys.platform), ("Python", sys.version.replace("\n", " ")),
            ("machine", platform.machine())]
    for name in ("imagescore_det", "torch", "torchvision", "detectron2", "fvcore", "iopath",
                 "pycocotools", "numpy", "cv2", "PIL", "matplotlib", "tensorboard"):
        rows.append((name, _version(name)))
    try:
        import detectron2

        d2_dir = os.path.dirname(detectron2.__file__)
        compiled = glob.glob(os.path.join(d2_dir, "_C*.so"))
        rows.append(("detectron2 compiled ops (_C)",
                     compiled[0] if compiled else
                     "absent: nms/roi_align/roi_pool come from torchvision; deformable conv "
                     "and rotated boxes are unavailable"))
    except ImportError:
        pass
    try:
        import torch

        rows.append(("CUDA available", str(torch.cuda.is_available())))
        if torch.cuda.is_available():
            rows.append(("GPU", torch.cuda.get_device_name(0)))
        rows.append(("torch threads", str(torch.get_num_threads())))
    except ImportError:
        pass
    return rows


def main():
    rows = collect_env_info()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
