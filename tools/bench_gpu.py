#!/usr/bin/env python
"""Images/s per precision, batch size and torch.compile. See ``python tools/bench_gpu.py --help``.

The same as ``ovseg bench-gpu``: the logic lives in ovseg.apps.bench_gpu.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-gpu"):  # as `ovseg bench-gpu`: one line, no traceback
        from ovseg.apps.bench_gpu import main

        sys.exit(main())
