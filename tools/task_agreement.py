#!/usr/bin/env python
"""How far panoptic and semantic segmentation agree, per class (see --help).

The same as ``ovseg agreement``: the logic lives in ovseg.apps.agreement.
"""

import sys

from ovseg.apps.agreement import main

if __name__ == "__main__":
    sys.exit(main())
