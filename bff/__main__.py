import sys

from bff.cli import main

sys.exit(main())
