"""The ``blobgate`` command line (entry point: ``main.main``)."""
