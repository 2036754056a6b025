#!/usr/bin/env python
"""Per-stage latency and peak memory. See ``python tools/benchmark.py --help``."""

import sys

from ovseg.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
