#!/usr/bin/env python
"""Train a prompt head (SAM's prompt encoder + mask decoder on the frozen CLIP). See ``--help``.

The same as ``ovseg train-prompt-head``: the logic lives in ovseg.apps.train_prompt_head.
"""

import sys

from ovseg.apps.main import ctrl_c_as_one_line

if __name__ == "__main__":
    with ctrl_c_as_one_line(
        "train-prompt-head"
    ):  # as `ovseg train-prompt-head`: one line, no traceback
        from ovseg.apps.train_prompt_head import main

        sys.exit(main())
