"""The storage layer: the ObjectStore and SessionStore contract suites, and
the S3 backend (its requests, checksums, conditional deletes, session
records and faults)."""
