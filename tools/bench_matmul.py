#!/usr/bin/env python
"""The machine's peak matrix-product rate per precision. See ``--help``.

The same as ``ovseg bench-matmul``: the logic lives in ovseg.apps.bench_matmul.
"""

import sys

from ovseg.apps.bench_matmul import main

if __name__ == "__main__":
    sys.exit(main())
