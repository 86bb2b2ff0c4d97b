"""TLS settings of a Client: the credentials and channel options that every
channel it opens (the target, or each discovered instance) is built with."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from blobgate.client.wire import ChannelOption


@dataclass(frozen=True)
class TLSConfig:
    """How to verify the server, and optionally who the client is.

    ``root_certificates`` are the PEM CA certificates to trust (None: the
    system's roots, as gRPC finds them). ``private_key`` and
    ``certificate_chain`` (PEM, both or neither) are the client's own, for
    servers that require client certificates. ``server_name_override`` is the
    name to expect in the server's certificate instead of the target's host
    (and to send as SNI): for instances reached by IP address, or in tests.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("private_key and certificate_chain go together: give both or neither")
        for name in ("root_certificates", "private_key", "certificate_chain"):
            value = getattr(self, name)
            if value is not None and b"-----BEGIN " not in value:
                # gRPC would only log this and fail every call with a vague error.
                raise ValueError(f"{name} is not PEM: no '-----BEGIN' line")

    def credentials(self, token: str | None = None) -> grpc.ChannelCredentials:
        """gRPC channel credentials built from these PEM bytes; with
        ``token``, every call also sends ``authorization: Bearer <token>``
        (gRPC sends such call credentials on secure channels only)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
        if token is None:
            return credentials
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )

    def channel_options(self) -> list[ChannelOption]:
        """Channel options that go with the credentials."""
        if not self.server_name_override:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]
