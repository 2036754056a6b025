#!/usr/bin/env python
"""The 3D language fields measured in the synthetic 3D world (see --help).

The same as ``ovseg bench-fields``: the logic lives in ovseg.apps.bench_fields.
"""

import sys

from ovseg.apps.bench_fields import main

if __name__ == "__main__":
    sys.exit(main())
