#!/usr/bin/env python
"""Training throughput and peak memory on generated data.

The same as ``ovseg bench-train``: the logic lives in ovseg.apps.bench_train.
"""

import sys

from ovseg.apps.bench_train import main

if __name__ == "__main__":
    sys.exit(main())
