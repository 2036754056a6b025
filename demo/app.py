#!/usr/bin/env python
"""The ovseg web demo: python demo/app.py [--model NAME] [--host 127.0.0.1] [--port 7860]."""

import sys

from ovseg.webapp import main

if __name__ == "__main__":
    sys.exit(main())
