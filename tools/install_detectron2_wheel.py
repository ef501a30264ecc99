#!/usr/bin/env python
"""Install Detectron2's pure-Python package from PyPI's ``sal-detectron2`` wheel.

Detectron2 has no PyPI release of its own. The ``sal-detectron2==0.7.2`` wheel carries
Detectron2's Python package (from its main branch) plus a ``_C`` extension compiled for
CPython 3.10. This script downloads that wheel, checks its sha256, drops the compiled
extension and repacks the rest as a ``detectron2`` wheel tagged ``py3-none-any`` that pip
then installs (so ``pip show``/``pip uninstall detectron2`` work as usual).

Without ``_C`` Detectron2 falls back to torchvision for nms/roi_align/roi_pool, which is all
Faster R-CNN training, inference and the Pascal VOC evaluator need. Deformable convs and
rotated boxes are unavailable: build from source (tools/install.sh IMAGESCORE_D2=source)
for those.

Usage: python tools/install_detectron2_wheel.py [--cache DIR]
"""
import argparse
import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile

SOURCE_NAME = "sal-detectron2"
SOURCE_VERSION = "0.7.2"
SOURCE_FILE = "sal_detectron2-0.7.2-cp310-none-any.whl"
SOURCE_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
OUT_VERSION = "0.7.2+pure"
OUT_FILE = "detectron2-0.7.2+pure-py3-none-any.whl"
# Requirements of the source wheel we do not pass on: `black` is only used to pretty-print
# lazy configs, and `numpy<2` is obsolete for the main-branch code it carries.
DROPPED_REQUIREMENTS = ("black", "numpy", "dataclasses")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(cache):
    path = os.path.join(cache, SOURCE_FILE)
    if not os.path.exists(path):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.10", "--platform", "linux_x86_64", "-d", cache,
               f"{SOURCE_NAME}=={SOURCE_VERSION}"]
        print("+", " ".join(cmd), flush=True)
        subprocess.check_call(cmd)
    digest = sha256_of(path)
    if digest != SOURCE_SHA256:
        os.remove(path)
        sys.exit(f"error: {path} has sha256 {digest}, expected {SOURCE_SHA256}; the file was "
                 "removed. Re-run to download it again; if it fails again the registry serves "
                 "a different file: build Detectron2 from source instead (IMAGESCORE_D2=source).")
    return path


def _record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(src, dst):
    """Copy ``src`` into ``dst`` without compiled files, renamed to ``detectron2``."""
    dist_info = f"detectron2-{OUT_VERSION}.dist-info"
    records = []
    tmp = dst + ".tmp"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if name.endswith("/") or name.endswith(".so") or ".dist-info/" in name:
                continue
            if not name.startswith("detectron2/"):
                continue
            data = zin.read(name)
            zout.writestr(name, data)
            records.append((name, _record_hash(data), str(len(data))))
        meta_src = next(n for n in zin.namelist() if n.endswith(".dist-info/METADATA"))
        meta_lines = []
        for line in zin.read(meta_src).decode().splitlines():
            if line.startswith("Name:"):
                line = "Name: detectron2"
            elif line.startswith("Version:"):
                line = f"Version: {OUT_VERSION}"
            elif line.startswith("Summary:"):
                line = ("Summary: Detectron2's pure-Python package (repacked from "
                        f"{SOURCE_NAME}=={SOURCE_VERSION}, no compiled ops)")
            elif line.startswith("Requires-Dist:"):
                req = re.split(r"[ <>=!;\[]", line[len("Requires-Dist:"):].strip())[0]
                if req in DROPPED_REQUIREMENTS:
                    continue
            elif line.strip() == "":
                break  # drop the long description
            meta_lines.append(line)
        files = {
            f"{dist_info}/METADATA": ("\n".join(meta_lines) + "\n").encode(),
            f"{dist_info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: imagescore-det\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
            f"{dist_info}/top_level.txt": b"detectron2\n",
        }
        for name, data in files.items():
            zout.writestr(name, data)
            records.append((name, _record_hash(data), str(len(data))))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(records)
        writer.writerow((f"{dist_info}/RECORD", "", ""))
        zout.writestr(f"{dist_info}/RECORD", buf.getvalue())
    os.replace(tmp, dst)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "imagescore-det"),
        help="where the downloaded and repacked wheels are kept")
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    src = download(args.cache)
    dst = os.path.join(args.cache, OUT_FILE)
    with tempfile.TemporaryDirectory(dir=args.cache):
        repack(src, dst)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", dst]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


if __name__ == "__main__":
    main()
