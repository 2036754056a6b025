#!/usr/bin/env python
"""3D language fields: synthetic posed scenes, fitting, text queries (see --help).

The same as ``ovseg fields``: the logic lives in ovseg.apps.fields.
"""

import sys

from ovseg.apps.fields import main

if __name__ == "__main__":
    sys.exit(main())
