#!/usr/bin/env python
"""The 4D language fields measured in the synthetic 4D world (see --help).

The same as ``ovseg bench-fields4d``: the logic lives in ovseg.apps.bench_fields4d.
"""

import sys

from ovseg.apps.bench_fields4d import main

if __name__ == "__main__":
    sys.exit(main())
