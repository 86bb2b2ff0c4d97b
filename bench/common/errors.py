"""The error the benchmarks raise."""


class BenchError(Exception):
    """The benchmark cannot go on or a transfer came back wrong."""
