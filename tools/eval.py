#!/usr/bin/env python
"""Evaluate a model: PQ / mIoU / AP. See ``python tools/eval.py --help``.

The same as ``ovseg eval``: the logic lives in ovseg.apps.eval.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("eval"):  # as `ovseg eval`: one line, no traceback
        from ovseg.apps.eval import main

        sys.exit(main())
