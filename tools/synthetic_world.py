#!/usr/bin/env python
"""The synthetic open-vocabulary world, end to end (see --help).

The same as ``ovseg synthetic-world``: the logic lives in ovseg.apps.synthetic_world.
"""

import sys

from ovseg.apps.synthetic_world import main

if __name__ == "__main__":
    sys.exit(main())
