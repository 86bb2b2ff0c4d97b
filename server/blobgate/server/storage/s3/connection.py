"""The gateway's S3 connections, shared by the object store, the sessions
and the janitor: two long-lived aioboto3 clients with pools of their own,
one for the bytes of transfers (part uploads, download bodies, commits) and
one for everything else (Stat, List, Delete, session records, the health
probe), so that transfers whose clients stall can never starve the others;
plus a third client for signing URLs when a public endpoint is configured.

With ``s3_full_object_checksums`` the transfers client sends its bodies with
an unsigned payload (``UNSIGNED-PAYLOAD`` in place of botocore's SHA-256 of
every byte): each body it sends (a part, a small upload's PutObject) carries
the CRC32C header the gateway computed, which S3 verifies, and the header
itself is signed. The control client's small bodies (session and sha256
records) stay signed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from blobgate.server.core.errors import NotFound
from blobgate.server.storage.s3 import timestamps
from blobgate.server.storage.s3.conditional_delete import ConditionalDeletes
from blobgate.server.storage.s3.config import S3Config
from blobgate.server.storage.s3.connection_shares import ConnectionShares
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.instrumentation import S3Instrumentation

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

# A PutObject body under this many bytes goes with its headers, without
# "Expect: 100-continue" (botocore asks for it on every file-like body, the
# gateway's PartBody included): waiting for S3's "100 Continue" costs a round
# trip, more than sending a small body that S3 might refuse.
EXPECT_CONTINUE_FROM = 1024 * 1024


def _small_put_without_expect(model: Any, params: dict[str, Any], **_: Any) -> None:
    """A ``before-call.s3`` handler, after botocore's own ``add_expect_header``
    (on the same event): drop the header from a PutObject whose body is under
    ``EXPECT_CONTINUE_FROM`` bytes. Returns None: a value would answer the
    call."""
    if model.name != "PutObject":
        return
    headers = params.get("headers")
    if not headers or "Expect" not in headers:
        return
    body = params.get("body")
    try:
        size = len(body)  # type: ignore[arg-type]  # bytes or the gateway's PartBody
    except TypeError:
        return  # a body of unknown length keeps the header
    if size < EXPECT_CONTINUE_FROM:
        del headers["Expect"]


class S3Connection:
    """Use as an async context manager, or ``start`` / ``close``."""

    def __init__(self, config: S3Config, credentials: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._credentials = dict(credentials or {})
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None
        self._transfers: S3Client | None = None
        self._signer: S3Client | None = None
        # Multipart uploads this instance is writing: never an orphan to the
        # janitor, whatever date the store gives them (moto dates every
        # upload in 2010).
        self.writing: set[str] = set()
        # Where the janitor's next look at sha256 records starts, by bucket.
        self.record_sweep_from: dict[str, str] = {}
        # Deletes on an ETag, and the buckets learnt to lack S3's If-Match.
        self.conditional_deletes = ConditionalDeletes(config.conditional_delete)
        # Each principal's places on the transfers pool (part uploads, GETs).
        self.shares = ConnectionShares(
            config.connections_per_principal, count_anonymous=config.count_anonymous
        )
        # Set before start() to measure every S3 request (metrics, spans).
        self.instrumentation: S3Instrumentation | None = None

    @property
    def full_object_checksums(self) -> bool:
        """Whether uploads carry S3's CRC32C (per part and full-object)."""
        return self.config.full_object_checksums

    def _config(self, pool: int, *, sign_payload: bool = True) -> AioConfig:
        c = self.config
        s3: dict[str, Any] = {"addressing_style": c.addressing_style}
        if not sign_payload:
            s3["payload_signing_enabled"] = False
        return AioConfig(
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            retries={"total_max_attempts": c.max_attempts, "mode": "standard"},
            max_pool_connections=pool,
            s3=s3,
            signature_version="s3v4",
            request_checksum_calculation=c.checksum_mode,
            response_checksum_validation=c.checksum_mode,
        )

    async def _open(
        self,
        session: aioboto3.Session,
        endpoint: str | None,
        pool: int,
        *,
        sign_payload: bool = True,
    ) -> S3Client:
        client: S3Client = await self._stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=self.config.region,
                config=self._config(pool, sign_payload=sign_payload),
            )
        )
        return client

    async def start(self) -> None:
        botocore_session = AioSession()
        timestamps.use_for(botocore_session)  # S3's dates without dateutil
        session = aioboto3.Session(botocore_session=botocore_session, **self._credentials)
        c = self.config
        self._client = await self._open(session, c.endpoint, c.control_connections)
        self._transfers = await self._open(
            session,
            c.endpoint,
            c.max_connections,
            sign_payload=not self.full_object_checksums,
        )
        for client in (self._client, self._transfers):
            client.meta.events.register_last(
                "before-call.s3",
                _small_put_without_expect,
                unique_id="blobgate-small-put-without-expect",
            )
        if self.instrumentation is not None:  # the signer sends no requests
            self.instrumentation.attach(self._client)
            self.instrumentation.attach(self._transfers)
        self._signer = self._client
        if c.public_endpoint:
            self._signer = await self._open(session, c.public_endpoint, 1)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = self._transfers = self._signer = None

    async def __aenter__(self) -> S3Connection:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> S3Client:
        """The client for requests that carry no object bytes."""
        if self._client is None:
            raise RuntimeError("S3Connection used before start()")
        return self._client

    @property
    def transfers(self) -> S3Client:
        """The client for the bytes of uploads and downloads."""
        if self._transfers is None:
            raise RuntimeError("S3Connection used before start()")
        return self._transfers

    @property
    def signer(self) -> S3Client:
        """The client whose endpoint presigned URLs name."""
        if self._signer is None:
            raise RuntimeError("S3Connection used before start()")
        return self._signer

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Create each missing bucket (the create-buckets setting), and turn
        versioning on in each (the bucket-versioning setting)."""
        for bucket in buckets:
            await self._ensure_bucket(bucket)
            if self.config.bucket_versioning:
                with s3_errors(bucket=bucket):
                    await self.client.put_bucket_versioning(
                        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
                    )

    async def _ensure_bucket(self, bucket: str) -> None:
        region = self.config.region or self.client.meta.region_name
        try:
            with s3_errors(bucket=bucket):
                await self.client.head_bucket(Bucket=bucket)
            return
        except NotFound:
            pass
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with s3_errors(bucket=bucket):
            await self.client.create_bucket(**kwargs)
        log.info("created bucket %s", bucket)

    async def check(self) -> None:
        """HeadBucket on the default bucket: the health probe."""
        bucket = self.config.default_bucket
        with s3_errors(bucket=bucket):
            await self.client.head_bucket(Bucket=bucket)


async def get_whole(client: S3Client, bucket: str, key: str) -> tuple[bytes, str]:
    """A small object's bytes and ETag (the gateway's own records), its body
    closed however the read ends, so its connection never outlives it."""
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        raw: bytes = await body.read()
    return raw, str(response.get("ETag", ""))
