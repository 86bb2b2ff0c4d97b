"""``python -m bench.throughput``: see bench.throughput.main."""

import sys

from bench.throughput.main import main

sys.exit(main())
