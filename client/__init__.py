"""Python client of the blobgate storage gateway.

async with Client("127.0.0.1:50051") as client:
    info = await client.upload("reports/q1.csv", Path("q1.csv"))
    await client.download_to("reports/q1.csv", "copy.csv")
"""

from client.client import Client, DownloadStream
from client.errors import BlobgateError
from client.models import ListPage, ObjectInfo, PresignedURL
from client.sources import UploadSource

__all__ = [
    "BlobgateError",
    "Client",
    "DownloadStream",
    "ListPage",
    "ObjectInfo",
    "PresignedURL",
    "UploadSource",
]
