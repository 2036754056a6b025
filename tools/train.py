#!/usr/bin/env python
"""Train ovseg. See ``python tools/train.py --help``."""

import sys

from ovseg.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
