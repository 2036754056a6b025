#!/usr/bin/env python
"""Segment images for any classes you name. See ``python demo/predict.py --help``."""

import sys

from ovseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
