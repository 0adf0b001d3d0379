"""``python -m bff.cli``: the command line, as ``bff``."""

import sys

from bff.cli import main

sys.exit(main())
