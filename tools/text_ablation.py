#!/usr/bin/env python
"""The context-aware text ablation in the synthetic world (see --help).

The same as ``ovseg text-ablation``: the logic lives in ovseg.apps.text_ablation.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("text-ablation"):  # as `ovseg text-ablation`: one line, no traceback
        from ovseg.apps.text_ablation import main

        sys.exit(main())
