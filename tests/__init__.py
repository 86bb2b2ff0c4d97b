"""The test suite, one folder per layer (see tests/README.md)."""
