"""The `blobgate` command, run as a subprocess."""
