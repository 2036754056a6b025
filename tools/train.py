#!/usr/bin/env python
"""Train ovseg. See ``python tools/train.py --help``.

The same as ``ovseg train``: the logic lives in ovseg.apps.train.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("train"):  # as `ovseg train`: one line, no traceback
        from ovseg.apps.train import main

        sys.exit(main())
