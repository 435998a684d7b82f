"""``python -m tiegraph``: the ``tiegraph`` command (see :mod:`tiegraph.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
