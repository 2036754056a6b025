from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="ovseg",
    version="0.1.0",
    description="Open-vocabulary semantic, instance and panoptic segmentation (FC-CLIP), "
    "pure PyTorch, CPU or GPU",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ovseg", "ovseg.*"]),
    package_data={"ovseg": ["vocab/*.txt", "vocab/templates/*.txt"]},
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "open_clip_torch>=3.3,<4",
        "timm>=1.0.31,<2",
        "numpy",
        "pillow",
        "pyyaml",
        "safetensors",
        "tqdm",
        "ftfy",
        "regex",
        "pycocotools",
        "scipy",
        "imageio-ffmpeg",
    ],
    extras_require={
        "dev": ["pytest", "ruff", "gradio>=5", "playwright"],
        "demo": ["gradio>=5"],
    },
)
