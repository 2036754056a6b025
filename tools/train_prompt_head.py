#!/usr/bin/env python
"""Train a prompt head (SAM's prompt encoder + mask decoder on the frozen CLIP). See ``--help``.

The same as ``ovseg train-prompt-head``: the logic lives in ovseg.apps.train_prompt_head.
"""

import sys

from ovseg.apps.train_prompt_head import main

if __name__ == "__main__":
    sys.exit(main())
