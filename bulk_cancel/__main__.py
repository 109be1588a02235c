"""``python -m bulk_cancel``: the same as the ``bulk-cancel`` command."""

import sys

from .cli import main

sys.exit(main())
