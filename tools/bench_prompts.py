#!/usr/bin/env python
"""Prompted-mask quality, labels and cost in the synthetic world. See ``--help``.

The same as ``ovseg bench-prompts``: the logic lives in ovseg.apps.bench_prompts.
"""

import sys

from ovseg.apps.bench_prompts import main

if __name__ == "__main__":
    sys.exit(main())
