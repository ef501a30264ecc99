#!/usr/bin/env python
"""imagescore-det: Image Score pseudo-label selection for Detectron2 (see README.md)."""
from setuptools import find_packages, setup

setup(
    name="imagescore-det",
    version="0.1.0",
    description="Semi-supervised object detection for Detectron2: pseudo-label the unlabeled "
                "images whose chain of activation best matches the labeled data",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["imagescore_det", "imagescore_det.*"]),
    python_requires=">=3.9",
    # PyTorch and Detectron2 are installed by tools/install.sh (Detectron2 has no PyPI release).
    install_requires=["numpy", "tqdm", "matplotlib", "Pillow", "opencv-python-headless"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
