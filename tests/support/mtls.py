"""Gateways in mTLS mode on moto's S3, and callers on connections of their
own, each presenting its client certificate: what the quota and fair-share
tests set up the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.pki import CA, Issued
from tests.support.gateways import gateway_settings, stop_gateway

# A channel of its own (no subchannel shared with other channels to the same
# address), so each caller has its own connection and certificate.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def client_credentials(ca: CA, client: Issued) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ca`` and presenting ``client``."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.pem, private_key=client.key, certificate_chain=client.cert
    )


@asynccontextmanager
async def mtls_gateway(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A gateway whose server certificate and client CA are ``ca``'s."""
    cert_file, key_file = ca.server().write(tmp_path, "server")
    settings = gateway_settings(
        moto_endpoint,
        bucket,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        tls_client_ca_file=ca.write(tmp_path),
        **overrides,
    )
    gateway = await start_gateway(settings)
    try:
        yield gateway
    finally:
        await stop_gateway(gateway)


@asynccontextmanager
async def caller(gateway: Gateway, ca: CA, client: Issued) -> AsyncIterator[Any]:
    """A stub on a connection of its own, as ``client``."""
    address = f"127.0.0.1:{gateway.port}"
    credentials = client_credentials(ca, client)
    async with grpc.aio.secure_channel(address, credentials, options=OWN_CONNECTION) as channel:
        yield storage_pb2_grpc.StorageServiceStub(channel)
