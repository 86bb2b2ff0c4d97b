"""The Python client (async and sync), its resumable uploads, its Download
deserializer, its TLS errors and discovery through Consul."""
