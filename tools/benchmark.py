#!/usr/bin/env python
"""Per-stage latency and peak memory. See ``python tools/benchmark.py --help``.

The same as ``ovseg bench``: the logic lives in ovseg.apps.bench.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench"):  # as `ovseg bench`: one line, no traceback
        from ovseg.apps.bench import main

        sys.exit(main())
