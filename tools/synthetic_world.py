#!/usr/bin/env python
"""The synthetic open-vocabulary world, end to end (see --help).

The same as ``ovseg synthetic-world``: the logic lives in ovseg.apps.synthetic_world.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line(
        "synthetic-world"
    ):  # as `ovseg synthetic-world`: one line, no traceback
        from ovseg.apps.synthetic_world import main

        sys.exit(main())
