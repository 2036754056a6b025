#!/usr/bin/env python
"""Convert an official FC-CLIP checkpoint to ovseg's safetensors format.

The same as ``ovseg convert``: the logic lives in ovseg.apps.convert.
"""

import sys

from ovseg.apps.convert import main

if __name__ == "__main__":
    sys.exit(main())
