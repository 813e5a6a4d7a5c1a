"""Allow python -m annlib."""

import sys

from annlib.cli import main

sys.exit(main())
