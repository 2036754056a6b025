"""``python -m ovseg COMMAND ...``: the same as the ``ovseg`` command."""

import sys

from ovseg.apps.main import main

sys.exit(main())
