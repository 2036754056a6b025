#!/usr/bin/env python
"""The 3D language fields measured in the synthetic 3D world (see --help).

The same as ``ovseg bench-fields``: the logic lives in ovseg.apps.bench_fields.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-fields"):  # as `ovseg bench-fields`: one line, no traceback
        from ovseg.apps.bench_fields import main

        sys.exit(main())
