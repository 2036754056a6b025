#!/usr/bin/env python
"""Time the PQ evaluator on generated panoptic pairs.

The same as ``ovseg bench-pq``: the logic lives in ovseg.apps.bench_pq.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-pq"):  # as `ovseg bench-pq`: one line, no traceback
        from ovseg.apps.bench_pq import main

        sys.exit(main())
