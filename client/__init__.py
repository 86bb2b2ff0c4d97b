"""Python client of the blobgate storage gateway.

async with Client("127.0.0.1:50051") as client:
    info = await client.upload("reports/q1.csv", Path("q1.csv"))
    await client.download_to("reports/q1.csv", "copy.csv")

``Client("consul://blobgate")`` spreads the calls over the passing instances
of the Consul service ``blobgate`` (agent: ``$CONSUL_HTTP_ADDR``).
``Client(target, options=ClientOptions(...))`` sets timeouts, retries, TLS
and more; ``Client(transport)`` takes a ``Transport`` of one's own.
``SyncClient`` has the same methods, blocking, for code without an event loop.
"""

import logging

from blobgate.client.client import Client
from blobgate.client.download import DownloadStream
from blobgate.client.errors import BlobgateError
from blobgate.client.models import DeleteResult, ListPage, ObjectInfo, PresignedURL
from blobgate.client.options import ClientOptions
from blobgate.client.progress import Progress
from blobgate.client.sources import UploadSource
from blobgate.client.sync_client import SyncClient, SyncDownloadStream
from blobgate.client.tls import TLSConfig
from blobgate.client.transport import Endpoint, StaticTransport, Transport

# A library logs; the application decides where that goes (nowhere by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BlobgateError",
    "Client",
    "ClientOptions",
    "DeleteResult",
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
