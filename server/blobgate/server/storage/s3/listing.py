"""List pages over ListObjectsV2 that the gateway's own records never shape.

The records (``RESERVED_PREFIX``: session checkpoints, quota markers, sha256
records) are hidden from callers, and so is their number: a page holds
``page_size`` visible entries whenever that many are left, and a page is
never empty while it hands out a next token. The hidden keys are one
contiguous run in S3's key order, so where a listing reaches them it starts
again just past them (StartAfter beyond the reserved prefix) rather than
walking them page by page; where a full page might be followed by hidden keys
only, one look ahead decides whether there is a next page at all.

The next token is S3's own continuation token (the RPC layer signs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blobgate.server.core.storage_classes import STANDARD
from blobgate.server.storage.protocols import RESERVED_PREFIX, ListPage, StoredObject
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import bare_etag

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Greater than every key the gateway writes under the reserved prefix (letters,
# digits, '-', '_' and '/' follow it), and less than every key after the
# prefix's run. "~" is the greatest printable ASCII character: LocalStack
# mishandles a StartAfter beyond ASCII. A key someone wrote straight to S3
# under ".blobgate/~" or beyond is still hidden, by the filter, a page at a time.
PAST_RESERVED = RESERVED_PREFIX + "~"


def _hidden(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX)


def _may_hide(prefix: str) -> bool:
    """Whether the listing of ``prefix`` can meet the reserved keys."""
    return RESERVED_PREFIX.startswith(prefix) or prefix.startswith(RESERVED_PREFIX)


@dataclass
class _Page:
    objects: list[StoredObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.objects) + len(self.prefixes)


def _entries(response: dict[str, Any]) -> list[str]:
    """Every name S3 returned (keys and common prefixes), in key order."""
    names = [item["Key"] for item in response.get("Contents", [])]
    names += [p["Prefix"] for p in response.get("CommonPrefixes", []) if "Prefix" in p]
    return sorted(names)


class Lister:
    """One List call: as many ListObjectsV2 requests as fill its page."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, delimiter: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._delimiter = delimiter

    async def _request(self, max_keys: int, token: str = "", start_after: str = "") -> Any:
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": self._prefix,
            "MaxKeys": max_keys,
        }
        if self._delimiter:
            kwargs["Delimiter"] = self._delimiter
        if token:
            kwargs["ContinuationToken"] = token
        elif start_after:
            kwargs["StartAfter"] = start_after
        with s3_errors(bucket=self._bucket):
            return await self._client.list_objects_v2(**kwargs)

    def _add(self, page: _Page, response: dict[str, Any]) -> None:
        for item in response.get("Contents", []):
            if _hidden(item["Key"]):
                continue
            page.objects.append(
                StoredObject(
                    bucket=self._bucket,
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=bare_etag(item.get("ETag", "")),
                    content_type="",
                    last_modified=item.get("LastModified"),
                    storage_class=str(item.get("StorageClass") or STANDARD),
                )
            )
        page.prefixes += [
            p["Prefix"]
            for p in response.get("CommonPrefixes", [])
            if "Prefix" in p and not _hidden(p["Prefix"])
        ]

    async def page(self, page_size: int, token: str) -> ListPage:
        page = _Page()
        start_after = ""
        last = ""  # the last name S3 returned
        while True:
            response = await self._request(page_size - len(page), token, start_after)
            self._add(page, response)
            page.prefixes = [p for p in page.prefixes if await self._shows(p)]
            names = _entries(response)
            last = names[-1] if names else last
            token = response.get("NextContinuationToken", "") if response.get("IsTruncated") else ""
            if not token:
                break
            if _hidden(last) and not start_after:  # skip the rest of the hidden run
                token, start_after = "", PAST_RESERVED
            elif len(page) >= page_size:
                break
        hidden_ahead = token and _may_hide(self._prefix) and last < RESERVED_PREFIX
        if hidden_ahead and not await self._visible_after(token):
            token = ""  # only hidden keys follow: this is the last page
        return ListPage(objects=page.objects, common_prefixes=page.prefixes, next_token=token)

    async def _shows(self, common_prefix: str) -> bool:
        """Whether a common prefix holds a visible key: one that is a part of
        the reserved prefix (a delimiter that occurs in it, such as ``.``)
        may roll up nothing but hidden keys."""
        if not RESERVED_PREFIX.startswith(common_prefix):
            return True
        under = Lister(self._client, self._bucket, common_prefix, "")
        first = _entries(await under._request(1))
        if first and not _hidden(first[0]):
            return True
        return bool(_entries(await under._request(1, start_after=PAST_RESERVED)))

    async def _visible_after(self, token: str) -> bool:
        """Whether any visible entry lies past ``token``, whose next entries
        may be hidden ones."""
        response = await self._request(1, token)
        names = _entries(response)
        if names and not _hidden(names[0]):
            return True
        if not response.get("IsTruncated") and not names:
            return False
        response = await self._request(1, start_after=PAST_RESERVED)
        return bool(_entries(response))
