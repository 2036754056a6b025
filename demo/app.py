#!/usr/bin/env python
"""The ovseg web demo: python demo/app.py [--model NAME] [--host 127.0.0.1] [--port 7860].

The same as ``ovseg app``: the logic lives in ovseg.apps.web.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("app"):  # as `ovseg app`: one line, no traceback
        from ovseg.apps.web import main

        sys.exit(main())
