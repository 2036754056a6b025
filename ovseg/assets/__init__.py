"""Files ovseg ships inside the package (package data, found wherever ovseg is installed).

- ``synthetic_tiny/``: the small model trained on the synthetic shapes world (weights, report,
  figure), the fallback model when the real FC-CLIP weights are absent;
- ``examples/``: three photos (scikit-image's, public domain) and three synthetic val scenes,
  used by ``ovseg predict --examples`` and the web demo.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = ASSETS_DIR / "examples"


def example_images() -> list[Path]:
    """The shipped example images, sorted by name."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg"))
