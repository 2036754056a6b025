#!/usr/bin/env python
"""Per-stage latency and peak memory. See ``python tools/benchmark.py --help``.

The same as ``ovseg bench``: the logic lives in ovseg.apps.bench.
"""

import sys

from ovseg.apps.bench import main

if __name__ == "__main__":
    sys.exit(main())
