#!/usr/bin/env python
"""Web-demo latencies without a browser.

The same as ``ovseg bench-demo``: the logic lives in ovseg.apps.bench_demo.
"""

import sys

from ovseg.apps.bench_demo import main

if __name__ == "__main__":
    sys.exit(main())
