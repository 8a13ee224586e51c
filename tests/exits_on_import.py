"""A module that exits while it is imported (tsrepo must report it, not obey it)."""

import sys

sys.exit(5)
