#!/usr/bin/env python
"""How far panoptic and semantic segmentation agree, per class (see --help).

The same as ``ovseg agreement``: the logic lives in ovseg.apps.agreement.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("agreement"):  # as `ovseg agreement`: one line, no traceback
        from ovseg.apps.agreement import main

        sys.exit(main())
