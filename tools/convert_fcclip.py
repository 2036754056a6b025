#!/usr/bin/env python
"""Convert an official FC-CLIP checkpoint to ovseg's safetensors format.

The same as ``ovseg convert``: the logic lives in ovseg.apps.convert.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("convert"):  # as `ovseg convert`: one line, no traceback
        from ovseg.apps.convert import main

        sys.exit(main())
