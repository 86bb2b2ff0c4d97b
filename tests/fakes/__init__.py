"""Stand-ins for the parts the tests talk to, each on real loopback sockets:
the Consul agent (``fakes.consul``), a fault-injecting S3 proxy
(``fakes.s3_fault_proxy``) and a raw HTTP/2 gRPC client (``fakes.raw_h2``)."""
