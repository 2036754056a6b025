#!/usr/bin/env python
"""3D language fields: synthetic posed scenes, fitting, text queries (see --help).

The same as ``ovseg fields``: the logic lives in ovseg.apps.fields.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("fields"):  # as `ovseg fields`: one line, no traceback
        from ovseg.apps.fields import main

        sys.exit(main())
