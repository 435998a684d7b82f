"""``python -m devtools.engines``: what ``python3 dev.py engines`` runs."""

import sys

from devtools.engines.harness import main

sys.exit(main())
