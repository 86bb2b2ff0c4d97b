"""What client and server agree on beyond storage.proto (wire constants and
the data-tag codec, Consul address parsing, TLS option shapes). Imported by
both sides; imports neither."""
