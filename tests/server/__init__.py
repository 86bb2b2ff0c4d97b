"""The blobgate-server process and its set-up: start-up, shutdown and exit
codes, settings, logs, TLS, the health listener and probe, Consul
registration, metrics and tracing."""
