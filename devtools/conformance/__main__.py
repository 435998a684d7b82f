"""``python -m devtools.conformance`` (what ``python3 dev.py conformance`` runs)."""

import sys

from .run import main

sys.exit(main())
