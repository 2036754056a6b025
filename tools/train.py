#!/usr/bin/env python
"""Train ovseg. See ``python tools/train.py --help``.

The same as ``ovseg train``: the logic lives in ovseg.apps.train.
"""

import sys

from ovseg.apps.train import main

if __name__ == "__main__":
    sys.exit(main())
