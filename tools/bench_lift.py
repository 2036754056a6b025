#!/usr/bin/env python
"""Training-free lifting onto Gaussian splats, measured (see --help).

The same as ``ovseg bench-lift``: the logic lives in ovseg.apps.bench_lift.
"""

import sys

from ovseg.apps.bench_lift import main

if __name__ == "__main__":
    sys.exit(main())
