"""Presigned UploadPart URLs for the parts of one direct session, signed in
bulk.

``generate_presigned_url`` runs botocore's whole request machinery for each
URL (parameter events, the endpoint ruleset, serialization): most of the
~0.4 ms it takes per part. Every part of one multipart upload shares all of
that but its part number, length and CRC32C, so ``sign_parts`` asks
botocore for the first part's URL as usual and then has botocore's own
SigV4 query signer (``S3SigV4QueryAuth``, from the signing client's request
signer, with its current credentials) sign the same request with each other
part's number and headers: the same URL botocore would make (endpoint,
addressing style, the key's and upload id's encoding are the first URL's, as
botocore wrote them; the Host header it signs is derived once, by botocore),
at about a third of the CPU. No crypto is done here.

A first URL that carries no SigV4 query signature (a client configured
otherwise) falls back to ``generate_presigned_url`` for every part.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from botocore.auth import _host_from_url  # type: ignore[attr-defined]
from botocore.awsrequest import AWSRequest

from blobgate.server.storage.checksums import crc32c_to_s3
from blobgate.server.storage.protocols import ObjectRef, PartSpec

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Parts signed between two yields to the event loop: a large batch does not
# hold up other calls for more than a few ms.
YIELD_EVERY = 32


def signed_headers(part: PartSpec) -> dict[str, str]:
    """The headers a part's URL signs: its length and CRC32C."""
    return {"Content-Length": str(part.size), "x-amz-checksum-crc32c": crc32c_to_s3(part.crc32c)}


async def _botocore_url(
    signer: S3Client, ref: ObjectRef, upload_id: str, part: PartSpec, expires_in: int
) -> str:
    params: dict[str, Any] = {
        "Bucket": ref.bucket,
        "Key": ref.key,
        "UploadId": upload_id,
        "PartNumber": part.number,
        "ContentLength": part.size,
        "ChecksumCRC32C": crc32c_to_s3(part.crc32c),
    }
    return await signer.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_in)


class _Template:
    """The unsigned request of a first URL: its scheme, host and path as
    botocore wrote them, its query without the signature, and the credential
    scope's region and service."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme, self.netloc, self.path = parts.scheme, parts.netloc, parts.path
        self.query: list[str] = []
        scope: list[str] = []
        for item in parts.query.split("&"):
            name, _, value = item.partition("=")
            if name == "X-Amz-Credential":
                scope = unquote(value).split("/")
            elif not name.startswith("X-Amz-"):
                self.query.append(item)
        # access-key/date/region/service/aws4_request
        self.usable = len(scope) == 5 and scope[4] == "aws4_request"
        self.region, self.service = (scope[2], scope[3]) if self.usable else ("", "")
        self.usable = self.usable and sum(i.startswith("partNumber=") for i in self.query) == 1

    def url(self, number: int) -> str:
        query = "&".join(
            f"partNumber={number}" if item.startswith("partNumber=") else item
            for item in self.query
        )
        return urlunsplit((self.scheme, self.netloc, self.path, query, ""))


async def sign_parts(
    signer: S3Client, ref: ObjectRef, upload_id: str, parts: list[PartSpec], expires_in: int
) -> list[str]:
    """The presigned UploadPart URL of each of ``parts`` (in order), valid
    for ``expires_in`` seconds, for ``signer``'s endpoint; each signs the
    part's length and CRC32C (``signed_headers``)."""
    if not parts:
        return []
    first = await _botocore_url(signer, ref, upload_id, parts[0], expires_in)
    urls = [first]
    template = _Template(first)
    if not template.usable:
        for part in parts[1:]:
            urls.append(await _botocore_url(signer, ref, upload_id, part, expires_in))
        return urls
    # The client's own SigV4 query signer, with its current credentials.
    request_signer: Any = signer._request_signer  # type: ignore[attr-defined]
    auth = await request_signer.get_auth_instance(
        signing_name=template.service,
        region_name=template.region,
        signature_version="s3v4-query",
        expires=expires_in,
    )
    # The Host header the signer would derive from each URL (the same for
    # all), derived once by botocore's own function.
    host = _host_from_url(template.url(parts[0].number))
    for index, part in enumerate(parts[1:], start=1):
        if index % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        request = AWSRequest(
            method="PUT",
            url=template.url(part.number),
            headers={**signed_headers(part), "host": host},
        )
        auth.add_auth(request)
        urls.append(request.prepare().url)
    return urls


__all__ = ["YIELD_EVERY", "sign_parts", "signed_headers"]
