"""``python -m batch``: the same as the ``imagebatch`` command."""

import sys

from .cli import main

sys.exit(main())
