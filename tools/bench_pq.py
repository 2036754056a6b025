#!/usr/bin/env python
"""Time the PQ evaluator on generated panoptic pairs.

The same as ``ovseg bench-pq``: the logic lives in ovseg.apps.bench_pq.
"""

import sys

from ovseg.apps.bench_pq import main

if __name__ == "__main__":
    sys.exit(main())
