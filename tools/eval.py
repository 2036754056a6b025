#!/usr/bin/env python
"""Evaluate a model: PQ / mIoU / AP. See ``python tools/eval.py --help``.

The same as ``ovseg eval``: the logic lives in ovseg.apps.eval.
"""

import sys

from ovseg.apps.eval import main

if __name__ == "__main__":
    sys.exit(main())
