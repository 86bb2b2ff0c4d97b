"""The keys the gateway keeps for itself."""

# Keys under this prefix hold the gateway's own records (the checkpoints of
# resumable upload sessions, the sha256 of multipart uploads, quota markers,
# the page-token key): callers can neither read, write nor list them, and no
# grant may name them.
RESERVED_PREFIX = ".blobgate/"
