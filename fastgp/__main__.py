"""``python -m fastgp``: the same entry point as the ``fastgp`` command."""

import sys

from fastgp.cli import main

sys.exit(main())
