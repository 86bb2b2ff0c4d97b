"""Stand-ins for the parts the tests talk to, each on real loopback sockets:
the Consul agent (``tests.fakes.consul``, checked against the real agent's
behaviour by test_consul_agent.py), a fault-injecting S3 proxy
(``tests.fakes.s3_fault_proxy``), a raw HTTP/2 gRPC client
(``tests.fakes.raw_h2``) and a small PKI (``tests.fakes.pki``)."""
