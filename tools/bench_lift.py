#!/usr/bin/env python
"""Training-free lifting onto Gaussian splats, measured (see --help).

The same as ``ovseg bench-lift``: the logic lives in ovseg.apps.bench_lift.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-lift"):  # as `ovseg bench-lift`: one line, no traceback
        from ovseg.apps.bench_lift import main

        sys.exit(main())
