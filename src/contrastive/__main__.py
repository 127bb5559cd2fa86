"""``python -m contrastive`` is the ``contrastive`` command."""

import sys

from .cli import main

sys.exit(main())
