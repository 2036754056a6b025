#!/usr/bin/env python
"""The context-aware text ablation in the synthetic world (see --help).

The same as ``ovseg text-ablation``: the logic lives in ovseg.apps.text_ablation.
"""

import sys

from ovseg.apps.text_ablation import main

if __name__ == "__main__":
    sys.exit(main())
