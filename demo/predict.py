#!/usr/bin/env python
"""Segment images or videos for any classes you name. See ``python demo/predict.py --help``.

The same as ``ovseg predict``: the logic lives in ovseg.apps.predict.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("predict"):  # as `ovseg predict`: one line, no traceback
        from ovseg.apps.predict import main

        sys.exit(main())
