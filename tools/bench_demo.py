#!/usr/bin/env python
"""Web-demo latencies without a browser.

The same as ``ovseg bench-demo``: the logic lives in ovseg.apps.bench_demo.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-demo"):  # as `ovseg bench-demo`: one line, no traceback
        from ovseg.apps.bench_demo import main

        sys.exit(main())
