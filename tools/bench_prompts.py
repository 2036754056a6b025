#!/usr/bin/env python
"""Prompted-mask quality, labels and cost in the synthetic world. See ``--help``.

The same as ``ovseg bench-prompts``: the logic lives in ovseg.apps.bench_prompts.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line("bench-prompts"):  # as `ovseg bench-prompts`: one line, no traceback
        from ovseg.apps.bench_prompts import main

        sys.exit(main())
