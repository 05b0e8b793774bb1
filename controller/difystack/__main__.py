"""``python -m difystack`` is the same as the ``difystack`` command."""

import sys

from difystack.cli import main

sys.exit(main())
