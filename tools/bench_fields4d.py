#!/usr/bin/env python
"""The 4D language fields measured in the synthetic 4D world (see --help).

The same as ``ovseg bench-fields4d``: the logic lives in ovseg.apps.bench_fields4d.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-fields4d"):  # as `ovseg bench-fields4d`: one line, no traceback
        from ovseg.apps.bench_fields4d import main

        sys.exit(main())
