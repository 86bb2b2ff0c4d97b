"""``python -m bench.soak``: see bench.soak.main."""

import sys

from bench.soak.main import main

sys.exit(main())
