"""The benchmarks (bench/), run tiny."""
