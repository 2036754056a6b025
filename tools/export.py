#!/usr/bin/env python
"""Export a model to ONNX with an open vocabulary (see --help).

The same as ``ovseg export``: the logic lives in ovseg.apps.export.
"""

import sys

from ovseg.apps.export import main

if __name__ == "__main__":
    sys.exit(main())
