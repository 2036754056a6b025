#!/usr/bin/env python
"""The ovseg web demo: python demo/app.py [--model NAME] [--host 127.0.0.1] [--port 7860].

The same as ``ovseg app``: the logic lives in ovseg.apps.web.
"""

import sys

from ovseg.apps.web import main

if __name__ == "__main__":
    sys.exit(main())
