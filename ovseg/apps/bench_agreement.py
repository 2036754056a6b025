"""How far a fast precision's outputs agree with fp32 (``ovseg bench`` reports it).

Random weights cannot show it (a random ConvNeXt's layer scales of 1e-6 hide its MLPs), so it
runs on trained or official small models: the shipped synthetic_tiny on its val scenes, and the
official tiny parity model on its two images when the checkout has tests/data/parity_tiny.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARITY_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity_tiny"


def _cases():
    """(name, predictor kwargs, images, vocabulary, short side) of each model checked."""
    from ovseg.assets import EXAMPLES_DIR

    yield (
        "synthetic_tiny",
        {"model": "synthetic_tiny"},
        sorted(EXAMPLES_DIR.glob("synthetic_val_*.png")),
        "synthetic_world",
        None,
    )
    weights = PARITY_DIR / "fcclip_tiny_official.pth"
    if weights.is_file():
        from ovseg.vocabulary import parse_vocabulary_text

        vocabulary = parse_vocabulary_text((PARITY_DIR / "vocab.tsv").read_text())
        yield (
            "parity_tiny",
            {"weights": weights, "config": "fcclip_tiny_parity"},
            [PARITY_DIR / "image_a.png", PARITY_DIR / "image_b.png"],
            vocabulary,
            96,
        )


def fast_path_agreement(precision: str, *, device: str = "cpu") -> dict:
    """Semantic argmax agreement (share of pixels with the same class) and panoptic segment
    counts of ``precision`` against fp32, per model, over all its images.

    Returns {"precision", "cases": [{"name", "images", "semantic_agreement" in [0, 1],
    "segments_fp32", "segments_fast", "same_segment_counts" (images with equal counts)}]}.
    """
    import tempfile

    from ovseg.predictor import OVSegPredictor

    cases = []
    for name, kwargs, images, vocabulary, short_side in _cases():
        outputs = {}
        for p in ("fp32", precision):
            predictor = OVSegPredictor.from_pretrained(
                **kwargs, device=device, precision=p, text_cache_dir=tempfile.mkdtemp()
            )
            predictor.set_vocabulary(vocabulary)
            outputs[p] = [
                predictor.predict(image, tasks=("semantic", "panoptic"), short_side=short_side)
                for image in images
            ]
        same = total = equal_counts = 0
        counts = {"fp32": 0, precision: 0}
        for exact, fast in zip(outputs["fp32"], outputs[precision], strict=True):
            a, b = exact["sem_seg"].argmax(0).numpy(), fast["sem_seg"].argmax(0).numpy()
            same += int(np.count_nonzero(a == b))
            total += a.size
            n_exact, n_fast = len(exact["segments_info"]), len(fast["segments_info"])
            counts["fp32"] += n_exact
            counts[precision] += n_fast
            equal_counts += n_exact == n_fast
        cases.append(
            {
                "name": name,
                "images": len(images),
                "semantic_agreement": same / max(total, 1),
                "segments_fp32": counts["fp32"],
                "segments_fast": counts[precision],
                "same_segment_counts": equal_counts,
            }
        )
    return {"precision": precision, "cases": cases}
