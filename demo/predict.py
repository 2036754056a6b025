#!/usr/bin/env python
"""Segment images or videos for any classes you name. See ``python demo/predict.py --help``.

The same as ``ovseg predict``: the logic lives in ovseg.apps.predict.
"""

import sys

from ovseg.apps.predict import main

if __name__ == "__main__":
    sys.exit(main())
