"""Python client of the blobgate storage gateway.

async with Client("127.0.0.1:50051") as client:
    info = await client.upload("reports/q1.csv", Path("q1.csv"))
    await client.download_to("reports/q1.csv", "copy.csv")

``Client("consul://blobgate")`` spreads the calls over the passing instances
of the Consul service ``blobgate`` (agent: ``$CONSUL_HTTP_ADDR``).
``Client(target, options=ClientOptions(...))`` sets timeouts, retries, TLS
and more; ``Client(transport)`` takes a ``Transport`` of one's own.
``SyncClient`` has the same methods, blocking, for code without an event loop.

The names below are imported on first use, so that importing a module of
the package (the ``blobgate`` command's) does not import gRPC before that
module is ready for it (see ``quiet_grpc``).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blobgate.client.client import Client
    from blobgate.client.download import DownloadStream
    from blobgate.client.errors import BlobgateError
    from blobgate.client.models import Deleted, DeleteResult, ListPage, ObjectInfo, PresignedURL
    from blobgate.client.options import ClientOptions
    from blobgate.client.progress import Progress
    from blobgate.client.sources import UploadSource
    from blobgate.client.sync_client import SyncClient, SyncDownloadStream
    from blobgate.client.transport import Endpoint, StaticTransport, Transport
    from blobgate.shared.tls import TLSConfig

# A library logs; the application decides where that goes (nowhere by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())

_MODULES = {
    "BlobgateError": "blobgate.client.errors",
    "Client": "blobgate.client.client",
    "ClientOptions": "blobgate.client.options",
    "Deleted": "blobgate.client.models",
    "DeleteResult": "blobgate.client.models",
    "DownloadStream": "blobgate.client.download",
    "Endpoint": "blobgate.client.transport",
    "ListPage": "blobgate.client.models",
    "ObjectInfo": "blobgate.client.models",
    "PresignedURL": "blobgate.client.models",
    "Progress": "blobgate.client.progress",
    "StaticTransport": "blobgate.client.transport",
    "SyncClient": "blobgate.client.sync_client",
    "SyncDownloadStream": "blobgate.client.sync_client",
    "TLSConfig": "blobgate.shared.tls",
    "Transport": "blobgate.client.transport",
    "UploadSource": "blobgate.client.sources",
}

__all__ = [
    "BlobgateError",
    "Client",
    "ClientOptions",
    "DeleteResult",
    "Deleted",
    "DownloadStream",
    "Endpoint",
    "ListPage",
    "ObjectInfo",
    "PresignedURL",
    "Progress",
    "StaticTransport",
    "SyncClient",
    "SyncDownloadStream",
    "TLSConfig",
    "Transport",
    "UploadSource",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it directly
    return value
