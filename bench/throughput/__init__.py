"""The throughput benchmark, ``python -m bench.throughput``: gateway against
direct S3, CPU per GiB, small-object ops and memory (see bench.throughput.main)."""
