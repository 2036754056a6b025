#!/usr/bin/env python
"""Training throughput and peak memory on generated data.

The same as ``ovseg bench-train``: the logic lives in ovseg.apps.bench_train.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-train"):  # as `ovseg bench-train`: one line, no traceback
        from ovseg.apps.bench_train import main

        sys.exit(main())
