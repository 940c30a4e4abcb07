"""``python -m forwardforward`` is the ``ff`` command."""

import sys

from forwardforward.cli import main

sys.exit(main())
