"""The StorageService through a real grpc.aio gateway: each RPC, bad input,
errors and health, limits and quotas, identity, authorization, the access
and audit logs, and a client in another language (tests/node/)."""
