"""``python -m kakeya_lib`` runs the ``kakeya`` command."""

import sys

from .cli import main

sys.exit(main())
