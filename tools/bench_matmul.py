#!/usr/bin/env python
"""The machine's peak matrix-product rate per precision. See ``--help``.

The same as ``ovseg bench-matmul``: the logic lives in ovseg.apps.bench_matmul.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-matmul"):  # as `ovseg bench-matmul`: one line, no traceback
        from ovseg.apps.bench_matmul import main

        sys.exit(main())
