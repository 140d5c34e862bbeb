"""``python -m st4r_lite.cli``: the same as the ``st4r-lite`` command."""

import sys

from st4r_lite.cli import main

sys.exit(main())
