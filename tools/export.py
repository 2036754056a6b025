#!/usr/bin/env python
"""Export a model to ONNX with an open vocabulary (see --help).

The same as ``ovseg export``: the logic lives in ovseg.apps.export.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("export"):  # as `ovseg export`: one line, no traceback
        from ovseg.apps.export import main

        sys.exit(main())
