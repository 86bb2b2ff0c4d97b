"""The soak benchmark, ``python -m bench.soak``: many concurrent mixed
streams through one gateway process for a while (see bench.soak.main)."""
